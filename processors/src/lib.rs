//! What an event does to shopstream's state: inventory, analytics, customer
//! behaviour and low-stock alerts, and the pipeline that commits a batch
//! together with its checkpoint. (Filled by the streaming pipeline work; the
//! service builds and runs without it.)
