-- The library's next migration after adopting dbops (versions 001-020 ran before; the baseline stands for them).
CREATE TABLE ${flyway:defaultSchema}.reminders (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    member_id bigint NOT NULL REFERENCES ${flyway:defaultSchema}.members (id),
    sent_at timestamptz NOT NULL DEFAULT now(),
    channel text NOT NULL DEFAULT '${reminder_channel}'
);
COMMENT ON TABLE ${flyway:defaultSchema}.reminders IS 'written by ${flyway:filename}';
