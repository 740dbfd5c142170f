//! CPU-bound parallel work (rayon) that stops early on cancellation.
