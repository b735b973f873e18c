"""Fleet commands on the station: receive, verify, store, execute, answer."""
