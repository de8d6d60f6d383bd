"""wxbot analytics: a ClickHouse projection of the event log and the reports read from it."""
