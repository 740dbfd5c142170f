//! Stages connected by channels, all stopped by one context.
