//! Contexts cancelled by process signals (SIGINT, SIGTERM).
