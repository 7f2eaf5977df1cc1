"""smtpcore's benchmarks: run ``python -m benchmarks`` (``--quick`` for a smoke run)."""
