"""tagproxy: serve vendor tags first-party and relay their beacons under rules."""

__version__ = "0.1.0"
