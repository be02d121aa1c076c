//! Interaction logs in one shape: who touched which item when, with dense
//! ids, sorted by time.

use std::collections::HashMap;

/// What an interaction was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    View,
    Purchase,
}

/// One interaction. `user` and `item` are dense ids (`0..users`, `0..items`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Interaction {
    pub user: u32,
    pub item: u32,
    /// Seconds since the Unix epoch.
    pub ts: i64,
    pub kind: Kind,
}

/// A log of interactions, oldest first (ties keep file order).
#[derive(Clone, Debug, Default)]
pub struct Dataset {
    pub interactions: Vec<Interaction>,
    /// The external id of each dense user id.
    pub users: Vec<String>,
    /// The external id of each dense item id.
    pub items: Vec<String>,
    /// Whether a user may interact with an item again (groceries: yes; a
    /// movie rating: no). Decides whether seen items are excluded.
    pub repeats: bool,
}

/// A line the reader could not use.
#[derive(Debug, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct DataError {
    pub line: usize,
    pub message: String,
}

#[derive(Default)]
struct Ids {
    index: HashMap<String, u32>,
    names: Vec<String>,
}

impl Ids {
    fn id(&mut self, name: &str) -> u32 {
        if let Some(&i) = self.index.get(name) {
            return i;
        }
        let i = self.names.len() as u32;
        self.index.insert(name.to_owned(), i);
        self.names.push(name.to_owned());
        i
    }
}

/// Reads every non-blank line after the header with `row`, which gets the
/// line and a maker of errors that name it.
fn rows(
    csv: &str,
    mut row: impl FnMut(&str, &dyn Fn(&str) -> DataError) -> Result<Interaction, DataError>,
) -> Result<Vec<Interaction>, DataError> {
    let mut out = Vec::new();
    for (n, line) in csv.lines().enumerate().skip(1) {
        if line.trim().is_empty() {
            continue;
        }
        let err = |message: &str| DataError {
            line: n + 1,
            message: message.to_owned(),
        };
        out.push(row(line, &err)?);
    }
    Ok(out)
}

fn finish(mut interactions: Vec<Interaction>, users: Ids, items: Ids, repeats: bool) -> Dataset {
    interactions.sort_by_key(|i| i.ts);
    Dataset {
        interactions,
        users: users.names,
        items: items.names,
        repeats,
    }
}

/// MovieLens `ratings.csv` (`userId,movieId,rating,timestamp`): every rating
/// is a view; a rating of 4 or more is also a purchase (one interaction of
/// kind `Purchase`, at the same time).
pub fn movielens(csv: &str) -> Result<Dataset, DataError> {
    let (mut users, mut items) = (Ids::default(), Ids::default());
    let out = rows(csv, |line, err| {
        let f: Vec<&str> = line.split(',').collect();
        let [user, item, rating, ts] = f[..] else {
            return Err(err("expected userId,movieId,rating,timestamp"));
        };
        let rating: f32 = rating.parse().map_err(|_| err("rating is not a number"))?;
        let ts: i64 = ts
            .trim()
            .parse()
            .map_err(|_| err("timestamp is not an integer"))?;
        let kind = if rating >= 4.0 {
            Kind::Purchase
        } else {
            Kind::View
        };
        Ok(Interaction {
            user: users.id(user),
            item: items.id(item),
            ts,
            kind,
        })
    })?;
    Ok(finish(out, users, items, false))
}

/// Days since 1970-01-01 of an ISO `YYYY-MM-DD` date.
fn days(date: &str) -> Option<i64> {
    let mut p = date.trim().split('-');
    let (y, m, d): (i64, i64, i64) = (
        p.next()?.parse().ok()?,
        p.next()?.parse().ok()?,
        p.next()?.parse().ok()?,
    );
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    // Howard Hinnant's days_from_civil.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    Some(era * 146_097 + doe - 719_468)
}

/// Groceries (`Member_number,Date,itemDescription`): every line is a
/// purchase at noon of its date; a member's lines on one date are one basket.
pub fn groceries(csv: &str) -> Result<Dataset, DataError> {
    let (mut users, mut items) = (Ids::default(), Ids::default());
    let out = rows(csv, |line, err| {
        let mut f = line.splitn(3, ',');
        let (Some(user), Some(date), Some(item)) = (f.next(), f.next(), f.next()) else {
            return Err(err("expected Member_number,Date,itemDescription"));
        };
        let day = days(date).ok_or_else(|| err("Date is not YYYY-MM-DD"))?;
        Ok(Interaction {
            user: users.id(user.trim()),
            item: items.id(item.trim()),
            ts: day * 86_400 + 43_200,
            kind: Kind::Purchase,
        })
    })?;
    Ok(finish(out, users, items, true))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn movielens_ratings_become_views_and_purchases_in_time_order() {
        let d = movielens(
            "userId,movieId,rating,timestamp\n1,31,2.5,200\n1,1029,4.0,100\n2,31,5,150\n",
        )
        .unwrap();
        assert_eq!(d.users, ["1", "2"]);
        assert_eq!(d.items, ["31", "1029"]);
        let ts: Vec<i64> = d.interactions.iter().map(|i| i.ts).collect();
        assert_eq!(ts, [100, 150, 200]);
        assert_eq!(d.interactions[0].kind, Kind::Purchase);
        assert_eq!(d.interactions[2].kind, Kind::View);
        assert!(!d.repeats);
        assert!(movielens("h\n1,2,x,3\n").is_err());
    }

    #[test]
    fn groceries_dates_are_days_and_baskets_share_a_time() {
        let d = groceries("Member_number,Date,itemDescription\n7,2015-01-02,whole milk\n7,2015-01-02,rolls/buns\n8,1970-01-01,soda\n").unwrap();
        assert_eq!(d.interactions[0].ts, 43_200);
        assert_eq!(d.interactions[1].ts, d.interactions[2].ts);
        assert_eq!(days("2015-01-02"), Some(16_437));
        assert_eq!(days("2016-13-01"), None);
        assert!(d.repeats);
        assert_eq!(d.items, ["whole milk", "rolls/buns", "soda"]);
    }
}
