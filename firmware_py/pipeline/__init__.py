"""The reader's loop: newest frame -> analyze -> embed -> match -> decide -> sinks, and the daemon around it."""
