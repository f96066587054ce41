//! socketio (being written)
