-- Flyway callback: after every migrate, the read-only role sees every table of the default schema.
GRANT SELECT ON ALL TABLES IN SCHEMA ${flyway:defaultSchema} TO library_readonly;
