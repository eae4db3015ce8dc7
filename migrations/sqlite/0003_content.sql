-- Content (service "content"): posts of three kinds, their threaded comments, reactions, and
-- the full-text index. Deletion is a hard delete: removing a post removes its comments,
-- reactions and index entry (the audit row keeps what was deleted). Tags and metadata are
-- JSON text. Times are ms since the epoch.
--
-- `seq` is the rowid (an INTEGER PRIMARY KEY, so VACUUM keeps it) that the external-content
-- FTS5 index points at; `id` (UUID v7) is the key everything else uses.
CREATE TABLE IF NOT EXISTS service_content_main (
    seq         INTEGER PRIMARY KEY,
    id          TEXT NOT NULL UNIQUE,
    kind        TEXT NOT NULL CHECK (kind IN ('article', 'micro', 'video')),
    author_id   TEXT NOT NULL,
    title       TEXT NOT NULL DEFAULT '',
    body        TEXT NOT NULL DEFAULT '',
    url         TEXT,
    tags        TEXT NOT NULL DEFAULT '[]' CHECK (json_valid(tags) AND json_type(tags) = 'array'),
    metadata    TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(metadata) AND json_type(metadata) = 'object'),
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS service_content_main_kind_idx ON service_content_main (kind, id);
CREATE INDEX IF NOT EXISTS service_content_main_author_idx ON service_content_main (author_id, id);

-- Comments: `parent_id` (a reply) must name a comment of the same content, which the
-- composite foreign key enforces; deleting a comment deletes its replies.
CREATE TABLE IF NOT EXISTS service_content_comment (
    id          TEXT PRIMARY KEY NOT NULL,
    content_id  TEXT NOT NULL REFERENCES service_content_main (id) ON DELETE CASCADE,
    parent_id   TEXT,
    author_id   TEXT NOT NULL,
    body        TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
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
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (content_id, user_id, kind)
);

-- Full-text index over title and body (external content: the text stays in
-- service_content_main), kept in step by the triggers below in the writing transaction.
CREATE VIRTUAL TABLE IF NOT EXISTS service_content_search USING fts5 (
    title,
    body,
    content = 'service_content_main',
    content_rowid = 'seq',
    tokenize = 'unicode61 remove_diacritics 2'
);

CREATE TRIGGER IF NOT EXISTS service_content_main_search_insert
AFTER INSERT ON service_content_main BEGIN
    INSERT INTO service_content_search (rowid, title, body) VALUES (new.seq, new.title, new.body);
END;

CREATE TRIGGER IF NOT EXISTS service_content_main_search_delete
AFTER DELETE ON service_content_main BEGIN
    INSERT INTO service_content_search (service_content_search, rowid, title, body)
    VALUES ('delete', old.seq, old.title, old.body);
END;

CREATE TRIGGER IF NOT EXISTS service_content_main_search_update
AFTER UPDATE OF title, body ON service_content_main BEGIN
    INSERT INTO service_content_search (service_content_search, rowid, title, body)
    VALUES ('delete', old.seq, old.title, old.body);
    INSERT INTO service_content_search (rowid, title, body) VALUES (new.seq, new.title, new.body);
END;
