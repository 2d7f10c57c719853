"""The console's screens: the scenario picker and the live dashboard."""
