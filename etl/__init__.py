"""lakedl ETL: configuration, Spark session, table store, raw data acquisition and conversion."""
