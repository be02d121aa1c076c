pub mod analytics;
pub mod auth;
pub mod events;
pub mod inventory;
pub mod me;
pub mod ops;
pub mod params;
pub mod products;
