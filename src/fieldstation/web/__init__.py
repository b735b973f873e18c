"""The station web app (issue 18)."""
