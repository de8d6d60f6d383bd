"""NATS JetStream plumbing: subjects, topology, connection, traced publish and consume."""
