"""wxbot's web console: WeCom login, the playground, dashboards and operations."""
