"""fidoctor fleet: many nodes' reports grouped by verdict, and findings across nodes."""
