"""Schedules: pure period maths (``periods``, ``cron``) and the APScheduler runner."""
