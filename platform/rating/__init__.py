"""Rating: rater sessions, the assignment of trials, votes, the rater page and its JSON API."""
