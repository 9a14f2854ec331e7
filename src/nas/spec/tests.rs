use super::*;

fn parse(text: &str) -> Result<RunSpec> {
    RunSpec::from_toml_str(text, Path::new("."))
}

const BASE: &str = "name = \"t\"\ndataset = \"sklearn:iris\"\n";

#[test]
fn the_budget_holds_exactly_the_tables_budget_keys() {
    let budget = Budget {
        trial_memory_mb: Some(1024),
        ..Budget::default()
    };
    let fields: Vec<String> = budget_map(&budget).keys().cloned().collect();
    let keys: Vec<String> = rules().budget.keys().cloned().collect();
    assert_eq!(fields, keys);
}

#[test]
fn trial_resources_default_to_one_cpu_and_are_checked() {
    let spec = parse(BASE).unwrap();
    assert_eq!(spec.budget.trial_cpus, 1.0);
    assert_eq!(spec.budget.trial_gpus, 0.0);
    assert_eq!(spec.budget.trial_memory_mb, None);
    let text = format!("{BASE}[budget]\ntrial_cpus = 0.5\ntrial_memory_mb = 512\n");
    let spec = parse(&text).unwrap();
    assert_eq!(spec.budget.trial_cpus, 0.5);
    assert_eq!(spec.budget.trial_memory_mb, Some(512));
    let err = parse(&format!("{BASE}[budget]\ntrial_gpus = -1\n")).unwrap_err();
    assert!(err.message.contains("budget.trial_gpus"), "{}", err.message);
}

#[test]
fn the_examples_are_valid() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for name in ["examples/digits.toml", "examples/diabetes.toml"] {
        RunSpec::load(&root.join(name)).unwrap();
    }
}

#[test]
fn errors_name_the_key() {
    let cases = [
        (format!("{BASE}colour = 1\n"), "colour"),
        (format!("{BASE}[budget]\ntrials = 0\n"), "budget.trials"),
        (format!("{BASE}[budget]\nepochz = 3\n"), "epochz"),
        (
            format!("{BASE}[search_space]\nminimum_levels = 3\nmaximum_levels = 1\n"),
            "search_space.minimum_levels",
        ),
        (
            format!("{BASE}[search_space]\nlevels = 3\n"),
            "search_space.levels",
        ),
        (
            format!("{BASE}[search_space]\nlearning_rate = [0.1, 0.01]\n"),
            "search_space.learning_rate",
        ),
        (format!("{BASE}objective = \"auc\"\n"), "objective"),
        (
            "name = \"t\"\ndataset = \"csv:/nonexistent/x.csv\"\n".to_string(),
            "dataset",
        ),
    ];
    for (text, key) in cases {
        let err = parse(&text).unwrap_err();
        assert_eq!(err.class, ErrorClass::Contract);
        assert!(err.message.contains(key), "{key}: {}", err.message);
    }
}

#[test]
fn late_failures_are_refused_before_anything_starts() {
    let cases = [
        (
            format!("{BASE}[search_space]\nminimum_neurons_per_unit = 0\n"),
            "search_space.minimum_neurons_per_unit",
        ),
        (
            format!("{BASE}[search_space]\np_lateral_connection = 1.5\n"),
            "search_space.p_lateral_connection",
        ),
        (
            format!("{BASE}[search_space]\nactivation = [\"swish\"]\n"),
            "search_space.activation",
        ),
        (
            format!("{BASE}[search_space]\nactivation = []\n"),
            "search_space.activation",
        ),
        (
            format!("{BASE}[dataset_options]\nvalidation_split = 1.0\n"),
            "dataset_options.validation_split",
        ),
        (
            format!("{BASE}[dataset_options]\ntarget = \"y\"\n"),
            "dataset_options.target",
        ),
        (
            format!("{BASE}[dataset_options]\ntask = \"regression\"\n"),
            "dataset_options.task",
        ),
        (format!("{BASE}seed = -1\n"), "seed"),
        (format!("{BASE}direction = \"up\"\n"), "direction"),
        (
            format!("{BASE}[budget]\ntrials = \"many\"\n"),
            "budget.trials",
        ),
        (
            "name = \"t\"\ndataset = \"sklearn:mnist\"\n".into(),
            "dataset",
        ),
        (
            "name = \"a\\u001b[2Jb\"\ndataset = \"sklearn:iris\"\n".into(),
            "name",
        ),
        (
            "name = \"a\\nb\"\ndataset = \"sklearn:iris\"\n".into(),
            "name",
        ),
        (
            "name = \"a\\u0000b\"\ndataset = \"sklearn:iris\"\n".into(),
            "name",
        ),
        ("dataset = \"sklearn:iris\"\n".into(), "name"),
        (
            format!("{BASE}[search_space]\np_lateral_connection = nan\n"),
            "search_space.p_lateral_connection",
        ),
        (
            format!("{BASE}[search_space]\nlearning_rate = [0.001, inf]\n"),
            "search_space.learning_rate",
        ),
        (format!("{BASE}seed = 1979-05-27\n"), "seed"),
        (format!("{BASE}objective = \"val_rmse\"\n"), "objective"),
    ];
    for (text, key) in cases {
        let err = parse(&text).unwrap_err();
        assert_eq!(err.class, ErrorClass::Contract);
        assert_eq!(err.details["key"], key, "{text}: {}", err.message);
    }
}

#[test]
fn the_direction_defaults_to_the_objectives_own() {
    let loss = parse(&format!("{BASE}objective = \"val_loss\"\n")).unwrap();
    assert_eq!(loss.direction, Direction::Minimize);
    assert_eq!(parse(BASE).unwrap().direction, Direction::Maximize);
    let asked = format!("{BASE}objective = \"val_loss\"\ndirection = \"maximize\"\n");
    assert_eq!(parse(&asked).unwrap().direction, Direction::Maximize);
}

#[test]
fn a_dataset_path_that_is_not_a_regular_file_says_what_it_is() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            format!("csv:{}", dir.path().display()),
            "is a directory, not a regular file",
        ),
        (
            "npz:/dev/zero".to_string(),
            "is not a regular file (a character device)",
        ),
        (
            format!("csv:{}/missing.csv", dir.path().display()),
            "does not exist",
        ),
    ];
    for (dataset, what) in cases {
        let text = format!("name = \"t\"\ndataset = \"{dataset}\"\n");
        let err = parse(&text).unwrap_err();
        assert_eq!(err.details["key"], "dataset");
        assert!(err.message.contains(what), "{dataset}: {}", err.message);
    }
}

#[test]
fn a_csv_header_is_read_within_a_bound() {
    let dir = tempfile::tempdir().unwrap();
    let long = vec![b'a'; (MAX_HEADER_BYTES + 10) as usize];
    std::fs::write(dir.path().join("d.csv"), long).unwrap();
    let err =
        RunSpec::from_toml_str("name = \"t\"\ndataset = \"csv:d.csv\"\n", dir.path()).unwrap_err();
    assert!(err.message.contains("longer than"), "{}", err.message);
}

#[test]
fn a_csv_without_the_target_column_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("d.csv"), "a,b,label\n1,2,0\n").unwrap();
    let text = "name = \"t\"\ndataset = \"csv:d.csv\"\n";
    let err = RunSpec::from_toml_str(text, dir.path()).unwrap_err();
    assert!(
        err.message.contains("dataset_options.target"),
        "{}",
        err.message
    );
    let ok = format!("{text}[dataset_options]\ntarget = \"label\"\n");
    let spec = RunSpec::from_toml_str(&ok, dir.path()).unwrap();
    assert!(spec.dataset.starts_with("csv:/"));
}

#[test]
fn trial_seeds_are_distinct_and_stable() {
    let seeds: std::collections::HashSet<u64> = (0..1000).map(|i| trial_seed(42, i)).collect();
    assert_eq!(seeds.len(), 1000);
    assert_eq!(trial_seed(42, 0), trial_seed(42, 0));
    assert!(seeds.iter().all(|s| *s < (1 << 53)));
}

#[test]
fn the_search_holds_exactly_the_tables_search_keys_and_defaults_to_random_without_pruner() {
    let fields = serde_json::to_value(Search::default()).unwrap();
    let keys: Vec<&String> = fields.as_object().unwrap().keys().collect();
    assert_eq!(keys, rules().search.keys().collect::<Vec<_>>());
    let spec = parse(BASE).unwrap();
    assert_eq!(spec.search.strategy, "random");
    assert_eq!(spec.search.pruner, "none");
    // A default search is neither stored nor sent: such runs read and run as before.
    assert!(serde_json::to_value(&spec).unwrap().get("search").is_none());
    assert!(!spec.trial_parameters(Path::new("a")).contains_key("search"));
}

#[test]
fn a_search_is_stored_and_sent_with_every_trial() {
    let spec = parse(&format!(
        "{BASE}[search]\nstrategy = \"tpe\"\npruner = \"asha\"\n"
    ))
    .unwrap();
    let stored: RunSpec = serde_json::from_value(serde_json::to_value(&spec).unwrap()).unwrap();
    assert_eq!(stored, spec);
    assert_eq!(
        spec.trial_parameters(Path::new("a"))["search"],
        serde_json::json!({"strategy": "tpe", "pruner": "asha"})
    );
    for (text, key) in [
        ("[search]\nstrategy = \"grid\"\n", "search.strategy"),
        ("[search]\npruner = \"hyperband\"\n", "search.pruner"),
        ("[search]\nsampler = \"tpe\"\n", "search.sampler"),
        ("search = \"tpe\"\n", "search"),
    ] {
        let err = parse(&format!("{BASE}{text}")).unwrap_err();
        assert_eq!(err.details["key"], key, "{text}: {err}");
    }
}

#[test]
fn the_shared_dataset_cases_are_decided_as_the_service_decides_them() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/spec_cases.json"
    );
    let cases: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    for case in cases["datasets"].as_array().unwrap() {
        let document = serde_json::json!({
            "name": "t",
            "dataset": case["dataset"],
            "objective": "val_loss",
            "dataset_options": case["options"],
        });
        let outcome = RunSpec::from_json_str(&document.to_string(), Path::new("."));
        match (outcome, case["error"].as_str()) {
            (Ok(_), None) => {}
            (Err(err), Some(key)) => {
                assert_eq!(err.details["key"], key, "{case}: {err}");
                assert!(err.message.starts_with(key), "{case}: {err}");
            }
            (outcome, _) => panic!("{case}: {outcome:?}"),
        }
    }
}

#[test]
fn a_synthetic_dataset_needs_an_objective_of_its_task() {
    let text = "name = \"t\"\ndataset = \"synthetic:regression\"\n";
    let err = parse(text).unwrap_err();
    assert_eq!(err.details["key"], "objective");
    assert!(err
        .message
        .contains("synthetic:regression is a regression dataset"));
    parse(&format!("{text}objective = \"val_rmse\"\n")).unwrap();
}

#[test]
fn the_trainer_defaults_to_numpy_and_travels_with_every_trial() {
    let spec = parse(BASE).unwrap();
    assert_eq!(spec.trainer, "numpy");
    let parameters = spec.trial_parameters(Path::new("artifacts"));
    assert_eq!(parameters["trainer"], "numpy");
    let spec = parse(&format!("trainer = \"keras\"\n{BASE}")).unwrap();
    assert_eq!(spec.trainer, "keras");
    let started = spec.run_started("r1", "2026-01-01T00:00:00Z", Path::new("artifacts"));
    assert_eq!(started.parameters["trainer"], "keras");
}

#[test]
fn an_unknown_trainer_is_refused_naming_the_key() {
    for value in ["\"torch\"", "\"\"", "1"] {
        let err = parse(&format!("trainer = {value}\n{BASE}")).unwrap_err();
        assert_eq!(err.class, ErrorClass::Contract);
        assert_eq!(err.details["key"], "trainer", "{value}: {err}");
        assert!(err.message.contains("numpy, keras"), "{err}");
    }
}

#[test]
fn a_clients_dataset_file_is_a_visible_data_file_of_its_kind_inside_the_root() {
    // The loaders quote what they read in their errors: a client may name the server's
    // datasets, never its other files (credentials, .env, the store), links included.
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    for (name, text) in [
        ("data.csv", "a,target\n1,2\n"),
        ("secrets.txt", "user,pass\nalice,hunter2\n"),
        (".env.csv", "a,target\n1,2\n"),
        ("cerebros.db", "SQLite format 3"),
    ] {
        std::fs::write(root.join(name), text).unwrap();
    }
    std::fs::create_dir(root.join(".git")).unwrap();
    std::fs::write(root.join(".git/data.csv"), "a,target\n1,2\n").unwrap();
    std::os::unix::fs::symlink(root.join("secrets.txt"), root.join("link.csv")).unwrap();
    let submit = |dataset: &str| {
        let text = format!("name = \"t\"\ndataset = \"{dataset}\"\n");
        RunSpec::from_client(&text, SpecSyntax::Toml, root)
    };
    submit("csv:data.csv").unwrap();
    assert!(submit(&format!("csv:{}", root.join("data.csv").display())).is_ok());
    let refused = submit("csv:secrets.txt").unwrap_err();
    assert_eq!(refused.details["key"], "dataset");
    for dataset in [
        "csv:.env.csv",
        "csv:.git/data.csv",
        "csv:link.csv",
        "csv:cerebros.db",
        "csv:missing.csv",
        "csv:../data.csv",
    ] {
        let err = submit(dataset).unwrap_err();
        assert_eq!(err.message, refused.message, "{dataset}");
    }
    let err = submit("npz:data.csv").unwrap_err();
    assert!(
        err.message.contains("must be a .npz file inside"),
        "{}",
        err.message
    );
}

#[test]
fn a_name_is_short_and_visible() {
    let named = |name: &str| parse(&format!("name = \"{name}\"\ndataset = \"sklearn:iris\"\n"));
    named(&"é".repeat(MAX_NAME_CHARS)).unwrap();
    for bad in [
        "x".repeat(MAX_NAME_CHARS + 1),
        " ".into(),
        "tab\there".into(),
        "\u{202E}evil".into(),
        "zero\u{200B}width".into(),
        "\u{FEFF}bom".into(),
    ] {
        let err = named(&bad).unwrap_err();
        assert_eq!(
            err.details.get("key"),
            Some(&serde_json::json!("name")),
            "{bad:?}: {err}"
        );
    }
}

#[test]
fn a_toml_syntax_error_names_its_line_and_what_it_points_at() {
    let err = parse("name = \"x\"\nname = \"y\"\ndataset = \"sklearn:iris\"\n").unwrap_err();
    assert!(
        err.message.contains("(line 2)") && err.message.contains("duplicate key at `name`"),
        "{}",
        err.message
    );
    assert_eq!(err.details["line"], 2);
    let err = parse("name = \"x\"\n\n[budget]\ntrials = \n").unwrap_err();
    assert_eq!(err.details["line"], 4, "{}", err.message);
}
