//! Channel iteration that ends the moment a context is done.
