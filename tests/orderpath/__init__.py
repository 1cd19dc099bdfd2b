"""The order path under a desk's load: concurrent orders, replicas, crashes, kill switches."""
