"""The tikv subject: a TiKV cluster watched through PD's HTTP API and Prometheus."""
