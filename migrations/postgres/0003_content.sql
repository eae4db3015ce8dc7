-- Content (service "content"): posts of three kinds, their threaded comments, reactions, and
-- full-text search. Deletion is a hard delete: removing a post removes its comments and
-- reactions (the audit row keeps what was deleted). Tags and metadata are jsonb. Times are
-- ms since the epoch.
--
-- `search` is a generated tsvector (title weighted A, body B; configuration 'simple'), built
-- from the text with every run of non-alphanumeric characters turned into a space: the words
-- are then the same as the query's (runs of letters and digits) and as SQLite's tokenizer's,
-- so "alice@example.org" is found by "example" on both backends.
CREATE TABLE IF NOT EXISTS service_content_main (
    id          TEXT PRIMARY KEY NOT NULL,
    kind        TEXT NOT NULL CHECK (kind IN ('article', 'micro', 'video')),
    author_id   TEXT NOT NULL,
    title       TEXT NOT NULL DEFAULT '',
    body        TEXT NOT NULL DEFAULT '',
    url         TEXT,
    tags        JSONB NOT NULL DEFAULT '[]'::jsonb CHECK (jsonb_typeof(tags) = 'array'),
    metadata    JSONB NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(metadata) = 'object'),
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL,
    search      TSVECTOR GENERATED ALWAYS AS (
        setweight(to_tsvector('simple'::regconfig, regexp_replace(title, '[^[:alnum:]]+', ' ', 'g')), 'A')
        || setweight(to_tsvector('simple'::regconfig, regexp_replace(body, '[^[:alnum:]]+', ' ', 'g')), 'B')
    ) STORED
);
CREATE INDEX IF NOT EXISTS service_content_main_kind_idx ON service_content_main (kind, id);
CREATE INDEX IF NOT EXISTS service_content_main_author_idx ON service_content_main (author_id, id);
CREATE INDEX IF NOT EXISTS service_content_main_metadata_gin ON service_content_main USING GIN (metadata);
CREATE INDEX IF NOT EXISTS service_content_main_tags_gin ON service_content_main USING GIN (tags);
CREATE INDEX IF NOT EXISTS service_content_main_search_gin ON service_content_main USING GIN (search);

-- Comments: `parent_id` (a reply) must name a comment of the same content, which the
-- composite foreign key enforces; deleting a comment deletes its replies.
CREATE TABLE IF NOT EXISTS service_content_comment (
    id          TEXT PRIMARY KEY NOT NULL,
    content_id  TEXT NOT NULL REFERENCES service_content_main (id) ON DELETE CASCADE,
    parent_id   TEXT,
    author_id   TEXT NOT NULL,
    body        TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL,
    UNIQUE (content_id, id),
    FOREIGN KEY (content_id, parent_id)
        REFERENCES service_content_comment (content_id, id) ON DELETE CASCADE
);
CREATE INDEX IF NOT EXISTS service_content_comment_parent_idx ON service_content_comment (content_id, parent_id);

-- Reactions: at most one of each kind per user per content.
CREATE TABLE IF NOT EXISTS service_content_reaction (
    content_id  TEXT NOT NULL REFERENCES service_content_main (id) ON DELETE CASCADE,
    user_id     TEXT NOT NULL,
    kind        TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (content_id, user_id, kind)
);
