//! The store's schema, as an ordered list of migrations. `PRAGMA user_version` records
//! how many have been applied; each runs in its own transaction.

/// Migration `n` (1-based) brings the schema from version `n - 1` to `n`.
pub const MIGRATIONS: &[&str] = &[
    // 1: runs, trials, artifacts, events.
    r#"
    CREATE TABLE model_runs (
        run_id            TEXT PRIMARY KEY,
        name              TEXT NOT NULL,
        status            TEXT NOT NULL,
        objective         TEXT NOT NULL,
        direction         TEXT NOT NULL,
        dataset_id        TEXT NOT NULL,
        seed              INTEGER NOT NULL,
        spec              TEXT NOT NULL,
        trials_planned    INTEGER NOT NULL,
        trials_completed  INTEGER NOT NULL DEFAULT 0,
        best_metric       REAL,
        best_trial_id     TEXT,
        start_info        TEXT,
        error             TEXT,
        created_at        TEXT NOT NULL,
        started_at        TEXT,
        finished_at       TEXT,
        owner_pid         INTEGER,
        owner_host        TEXT,
        owner_start       TEXT,
        heartbeat_ms      INTEGER,
        cancel_requested  INTEGER NOT NULL DEFAULT 0,
        mlflow_run_id     TEXT
    );
    CREATE TABLE model_trials (
        run_id         TEXT NOT NULL REFERENCES model_runs(run_id),
        trial_id       TEXT NOT NULL,
        idx            INTEGER NOT NULL,
        seed           INTEGER NOT NULL,
        status         TEXT NOT NULL,
        metrics        TEXT NOT NULL DEFAULT '{}',
        parameters     TEXT NOT NULL DEFAULT '{}',
        artifact_uri   TEXT,
        duration_ms    INTEGER NOT NULL DEFAULT 0,
        error          TEXT,
        attempts       INTEGER NOT NULL DEFAULT 0,
        started_at     TEXT,
        finished_at    TEXT,
        mlflow_run_id  TEXT,
        PRIMARY KEY (run_id, trial_id),
        UNIQUE (run_id, idx)
    );
    CREATE TABLE model_artifacts (
        id          INTEGER PRIMARY KEY,
        run_id      TEXT NOT NULL REFERENCES model_runs(run_id),
        trial_id    TEXT,
        kind        TEXT NOT NULL,
        uri         TEXT NOT NULL,
        sha256      TEXT,
        bytes       INTEGER,
        created_at  TEXT NOT NULL
    );
    CREATE TABLE run_events (
        id      INTEGER PRIMARY KEY,
        run_id  TEXT NOT NULL REFERENCES model_runs(run_id),
        kind    TEXT NOT NULL,
        at      TEXT NOT NULL,
        data    TEXT NOT NULL DEFAULT '{}'
    );
    CREATE INDEX run_events_by_run ON run_events(run_id, id);
    CREATE INDEX model_artifacts_by_run ON model_artifacts(run_id);
    "#,
    // 2: the MLflow outbox (see `outbox.rs`), filled with what earlier versions finished.
    r#"
    CREATE TABLE mlflow_outbox (
        id               INTEGER PRIMARY KEY,
        kind             TEXT NOT NULL CHECK (kind IN ('run', 'trial')),
        run_id           TEXT NOT NULL REFERENCES model_runs(run_id),
        trial_id         TEXT,
        status           TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'synced')),
        revision         INTEGER NOT NULL DEFAULT 1,
        attempts         INTEGER NOT NULL DEFAULT 0,
        next_attempt_ms  INTEGER NOT NULL DEFAULT 0,
        lease_owner      TEXT,
        lease_until_ms   INTEGER,
        last_error       TEXT,
        created_at       TEXT NOT NULL,
        synced_at        TEXT
    );
    CREATE INDEX mlflow_outbox_by_status ON mlflow_outbox(status, run_id, id);
    INSERT INTO mlflow_outbox (kind, run_id, trial_id, created_at)
        SELECT 'trial', run_id, trial_id, strftime('%Y-%m-%dT%H:%M:%fZ', 'now') FROM model_trials
        WHERE status IN ('succeeded', 'failed', 'cancelled') AND mlflow_run_id IS NULL
        ORDER BY run_id, idx;
    INSERT INTO mlflow_outbox (kind, run_id, created_at)
        SELECT 'run', run_id, strftime('%Y-%m-%dT%H:%M:%fZ', 'now') FROM model_runs
        WHERE status IN ('succeeded', 'failed', 'cancelled') AND mlflow_run_id IS NULL
        ORDER BY created_at;
    "#,
    // 3: outbox items that can never sync are parked as `failed` (a new status, so the
    // table is rebuilt: SQLite cannot change a CHECK constraint), and a lease names the
    // process that holds it (host, pid, start time), so a dead holder's leases are freed
    // at once instead of when they expire.
    r#"
    CREATE TABLE mlflow_outbox_v3 (
        id               INTEGER PRIMARY KEY,
        kind             TEXT NOT NULL CHECK (kind IN ('run', 'trial')),
        run_id           TEXT NOT NULL REFERENCES model_runs(run_id),
        trial_id         TEXT,
        status           TEXT NOT NULL DEFAULT 'pending'
                             CHECK (status IN ('pending', 'synced', 'failed')),
        revision         INTEGER NOT NULL DEFAULT 1,
        attempts         INTEGER NOT NULL DEFAULT 0,
        next_attempt_ms  INTEGER NOT NULL DEFAULT 0,
        lease_owner      TEXT,
        lease_until_ms   INTEGER,
        lease_host       TEXT,
        lease_pid        INTEGER,
        lease_start      TEXT,
        last_error       TEXT,
        created_at       TEXT NOT NULL,
        synced_at        TEXT,
        failed_at        TEXT
    );
    INSERT INTO mlflow_outbox_v3 (id, kind, run_id, trial_id, status, revision, attempts,
            next_attempt_ms, lease_owner, lease_until_ms, last_error, created_at, synced_at)
        SELECT id, kind, run_id, trial_id, status, revision, attempts, next_attempt_ms,
            lease_owner, lease_until_ms, last_error, created_at, synced_at
        FROM mlflow_outbox;
    DROP TABLE mlflow_outbox;
    ALTER TABLE mlflow_outbox_v3 RENAME TO mlflow_outbox;
    CREATE INDEX mlflow_outbox_by_status ON mlflow_outbox(status, run_id, id);
    "#,
    // 4: the run queue of `serve` (DESIGN §11). `queue_position` orders the queue (FIFO;
    // a run queued again to be resumed goes to its end); `driver` is `serve` for a run a server
    // took from the queue, so that a server restarted after a crash resumes the runs it
    // was driving.
    r#"
    ALTER TABLE model_runs ADD COLUMN queue_position INTEGER;
    ALTER TABLE model_runs ADD COLUMN driver TEXT;
    UPDATE model_runs SET queue_position = rowid;
    CREATE INDEX model_runs_by_status ON model_runs(status, queue_position);
    "#,
    // 5: where a trial ran under the ray executor (DESIGN §12): the Ray node id, its host
    // name and the worker process's pid (NULL under the local executor).
    r#"
    ALTER TABLE model_trials ADD COLUMN node_id TEXT;
    ALTER TABLE model_trials ADD COLUMN node_host TEXT;
    ALTER TABLE model_trials ADD COLUMN worker_pid INTEGER;
    "#,
    // 6: the outbox item of one run or trial is found through an index: queuing a
    // trial's sync no longer scans every pending item of its run.
    r#"
    CREATE INDEX mlflow_outbox_by_item ON mlflow_outbox(run_id, trial_id, kind);
    "#,
];
