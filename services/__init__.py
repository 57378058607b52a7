"""OIX: the operational information exchange bus for national border guard services."""
