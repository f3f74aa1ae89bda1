"""Quality control: per-rater measures from sentinel, repeat and timing data, and the flags they raise."""
