//! websocket (being written)
