// The web pages are embedded with include_dir, which cargo cannot see:
// rebuild when anything under web/ changes.
fn main() {
    println!("cargo:rerun-if-changed=web");
}
