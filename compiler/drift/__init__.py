"""meshc drift: compare what runs (cluster dumps, PuppetDB) with what the spec renders."""
