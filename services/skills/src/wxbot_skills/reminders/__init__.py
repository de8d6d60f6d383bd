"""The reminders skill (日程管理): reminders as JetStream message schedules, delivered through the pipeline."""
