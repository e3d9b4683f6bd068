"""Flow control: the write ceiling (fixed or adaptive), its share among replicas, the
pollers' pace, the breaker on MongoDB, retry backoff and poller scaling."""
