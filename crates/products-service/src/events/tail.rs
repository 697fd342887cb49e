//! `products-service events tail`: prints the change events for a person to
//! read, one JSON line each, so the stream can be watched without Kafka
//! tools.
