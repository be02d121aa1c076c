use std::fmt;

/// The logical tables. Each is a physical table named `{prefix}{name}` with a
/// string partition key `pk` and a string sort key `sk`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Table {
    /// Users (`user#{id}` / `profile`), their refresh tokens
    /// (`user#{id}` / `refresh#{token id}`) and the e-mail uniqueness markers
    /// (`email#{address}` / `email`).
    Users,
    /// Products: the canonical item (`product` / `{id}`), its copies in the
    /// category and supplier partitions for filtered listing, and the SKU
    /// uniqueness marker (`sku#{sku}` / `sku`).
    Products,
    /// Small service-wide records: settings, bootstrap markers.
    Meta,
    /// The embedded event log: `log#{partition}` / zero-padded offset, and
    /// each partition's head counter (`log#{partition}` / `head`).
    Log,
    /// Shard and partition leases with their checkpoints (`{stream}` / `{shard}`).
    Leases,
    /// Stock per product (`inventory` / `{product id}`).
    Inventory,
    /// Per-minute counters (`minute#{scope}` / `{minute}`) and trending
    /// counters (`trend#{bucket}` / `{product id}`).
    Analytics,
    /// What each user or session did (`subject#{key}` / `profile`), and the
    /// recommender's training log of behaviour events per hour
    /// (`interactions#{YYYY-MM-DDTHH}` / `{first time}#{first event id}#{chunk}`).
    Behaviour,
    /// Records that were not valid events (`dead` / `{time}#{position}`).
    DeadLetters,
    /// Low-stock alerts (`supplier#{id}` / `{time}#{product id}`).
    Alerts,
    /// Baskets (`basket#{owner}` / `basket`), owner `user:{id}` or `session:{id}`.
    Baskets,
    /// Orders (`order#{id}` / `order`), their summaries per owner
    /// (`owner#{owner}` / `{created}#{id}`), per status (`status#{status}` /
    /// `{created}#{id}`) and in total (`all` / `{created}#{id}`), checkout
    /// idempotency keys (`idem#{owner}#{key}` / `idem`) and open reservations
    /// by expiry (`reservation` / `{expires}#{id}`).
    Orders,
    /// Work to do after a commit, written in the same transaction: events to
    /// publish, notifications to deliver, refunds (`outbox` / `{time}#{id}`).
    Outbox,
}

impl Table {
    pub const ALL: [Table; 13] = [
        Table::Users,
        Table::Products,
        Table::Meta,
        Table::Log,
        Table::Leases,
        Table::Inventory,
        Table::Analytics,
        Table::Behaviour,
        Table::DeadLetters,
        Table::Alerts,
        Table::Baskets,
        Table::Orders,
        Table::Outbox,
    ];

    pub fn name(&self) -> &'static str {
        match self {
            Table::Users => "users",
            Table::Products => "products",
            Table::Meta => "meta",
            Table::Log => "log",
            Table::Leases => "leases",
            Table::Inventory => "inventory",
            Table::Analytics => "analytics",
            Table::Behaviour => "behaviour",
            Table::DeadLetters => "dead_letters",
            Table::Alerts => "alerts",
            Table::Baskets => "baskets",
            Table::Orders => "orders",
            Table::Outbox => "outbox",
        }
    }
}

impl Table {
    /// The attribute by which the table's items expire (seconds since the
    /// epoch), for the tables that use one: baskets and the change feed in
    /// `meta`. `shopstream init` and the Terraform both turn it on.
    pub fn ttl_attribute(&self) -> Option<&'static str> {
        match self {
            Table::Meta | Table::Baskets => Some("ttl"),
            _ => None,
        }
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
