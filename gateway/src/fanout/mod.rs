//! The data path from the bus to each client's queue, knowing nothing of
//! sockets or of the application state: a bus message becomes one shared
//! [`frame::Frame`] (`frame`), the relay reads the bus and reopens the feed
//! when it fails or stalls (`relay`, `stall`), quotes are held back per symbol by the throttle
//! (`throttle`), rooms hold membership, last values and the memory history
//! (`rooms`, `history`), and each client's bounded conflating queue is its
//! outbox (`outbox`). The history reader (`history`) serves replays from
//! JetStream or from memory.

pub mod frame;
pub mod history;
pub mod outbox;
pub mod relay;
pub mod rooms;
pub mod stall;
pub mod throttle;
