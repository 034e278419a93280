"""fluxo.contrib.flask: the FLUXO_* keys, their defaults, and the errors that name them."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("flask_sqlalchemy")

import sqlalchemy as sa
from flask import Flask

import fluxo
from fluxo.contrib.flask import KEYS, Fluxo, register_error_handlers
from fluxo.stores import memory, sql
from fluxo.testing import WorkflowEnvironment
from tests.integration import flaskapp

ROOT = Path(__file__).parents[2]


@pytest.fixture
def apps() -> Iterator[list[Flask]]:
    """Apps made by a test, whose engines are closed afterwards."""
    made: list[Flask] = []
    yield made
    for app in made:
        state = app.extensions.get("fluxo")
        if state is not None:
            state.close()


def bare_app(apps: list[Flask], config: dict[str, Any], *, workflows: Any = ()) -> Flask:
    """An app without Flask-SQLAlchemy, with a Fluxo of its own."""
    app = Flask("bare")
    app.config.update(config)
    Fluxo(app, workflows=workflows)
    apps.append(app)
    return app


def shop_app(apps: list[Flask], config: dict[str, Any], name: str = "flaskapp") -> Flask:
    app = flaskapp.create_app(config, name=name)
    apps.append(app)
    return app


def error(match: str) -> Any:
    return pytest.raises(fluxo.DefinitionError, match=match)


# -- the store -----------------------------------------------------------------------------


def test_fluxo_store_takes_a_url(apps: list[Flask], tmp_path: Path) -> None:
    app = bare_app(apps, {"FLUXO_STORE": f"sqlite:///{tmp_path / 'f.db'}"})
    engine = app.extensions["fluxo"].extension.get_engine(app)
    assert isinstance(engine.store, sql.SQLStore)
    assert engine.store.engine.url.database == str(tmp_path / "f.db")


def test_fluxo_store_takes_a_store_object_and_leaves_it_open(apps: list[Flask]) -> None:
    store = memory.MemoryStore()
    app = bare_app(apps, {"FLUXO_STORE": store})
    state = app.extensions["fluxo"]
    assert state.engine().store is store
    state.close()
    assert store.list_runs(statuses=None, workflows=None, limit=1) == []  # still open


def test_the_store_defaults_to_flask_sqlalchemys_database(
    apps: list[Flask], tmp_path: Path
) -> None:
    """A relative SQLite path is in the instance folder, as Flask-SQLAlchemy puts it."""
    app = Flask("instance", instance_path=str(tmp_path / "instance"))
    app.config["SQLALCHEMY_DATABASE_URI"] = "sqlite:///notes.db"
    flaskapp.db.init_app(app)
    Fluxo(app)
    apps.append(app)
    state = app.extensions["fluxo"]
    engine = state.engine()
    assert isinstance(engine.store, sql.SQLStore)
    assert engine.store.engine.url.database == str(tmp_path / "instance" / "notes.db")
    assert state.join_session == "join"


def test_the_default_store_uses_fluxos_driver_for_the_same_database(
    apps: list[Flask], tmp_path: Path
) -> None:
    app = shop_app(apps, {"SQLALCHEMY_DATABASE_URI": f"sqlite+pysqlite:///{tmp_path / 'n.db'}"})
    store = app.extensions["fluxo"].engine().store
    assert isinstance(store, sql.SQLStore)
    assert store.engine.url.drivername == "sqlite+pysqlite"  # the default: the same


def test_fluxo_store_takes_a_workflow_environment(apps: list[Flask], tmp_path: Path) -> None:
    with WorkflowEnvironment() as env:
        app = shop_app(
            apps, {"SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'a.db'}", "FLUXO_STORE": env}
        )
        engine = app.extensions["fluxo"].engine()
        assert engine.store is env.store
        assert engine.clock is env.engine.clock  # runs are started at the virtual time
        assert {w.name for w in engine.workflows} <= env.engine.workflow_names
        assert app.extensions["fluxo"].join_session == "off"

        env.advance(timedelta(days=3))
        handle = engine.start(flaskapp.see, 1)
        assert engine.get_run(handle.id).created_at == env.engine.clock()  # 3 days ahead


def test_without_a_store_init_app_names_the_key_to_set(apps: list[Flask]) -> None:
    with error(r"app.config\['FLUXO_STORE'\] is not set: set it to the store URL"):
        bare_app(apps, {})


def test_a_database_uri_without_flask_sqlalchemy_is_no_store(apps: list[Flask]) -> None:
    app = bare_app(apps, {"SQLALCHEMY_DATABASE_URI": "sqlite:///x.db"})
    with error(r"FLUXO_STORE'\] is not set, and Flask-SQLAlchemy is not set up on this app"):
        app.extensions["fluxo"].engine()


def test_flask_sqlalchemy_in_memory_is_no_store(apps: list[Flask]) -> None:
    app = shop_app(apps, {"SQLALCHEMY_DATABASE_URI": "sqlite://"})
    with error(r"SQLite in memory, which no other connection \(nor worker\) can see"):
        app.extensions["fluxo"].engine()


def test_an_unusable_store_url_names_the_key(apps: list[Flask]) -> None:
    app = bare_app(apps, {"FLUXO_STORE": "oracle://scott:tiger@db/x"})
    with error(r"^app.config\['FLUXO_STORE'\]: no Fluxo store handles URLs starting 'oracle'"):
        app.extensions["fluxo"].engine()


def test_an_unusable_default_store_says_where_it_came_from(
    apps: list[Flask], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fluxo.contrib.flask import _extension

    monkeypatch.setattr(_extension, "_default_store_url", lambda app: "mssql://u:secret@db/x")
    app = shop_app(apps, {"SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'n.db'}"})
    with pytest.raises(fluxo.DefinitionError) as info:
        app.extensions["fluxo"].engine()
    assert "the store taken from Flask-SQLAlchemy's database (set FLUXO_STORE" in str(info.value)
    assert "secret" not in str(info.value)


# -- every key's checks --------------------------------------------------------------------

BAD_VALUES = [
    ("FLUXO_STORE", "fluxo.db", r"FLUXO_STORE'\] must be a store URL such as"),
    ("FLUXO_STORE", 42, r"FLUXO_STORE'\] must be a store URL .* not 42"),
    ("FLUXO_WORKFLOWS", "shop.workflows", r"must be a list of dotted paths.*\['shop.workflows'\]"),
    ("FLUXO_WORKFLOWS", [""], r"FLUXO_WORKFLOWS'\] holds '', which is not a dotted path"),
    ("FLUXO_WORKFLOWS", [3], r"FLUXO_WORKFLOWS'\] holds 3"),
    ("FLUXO_APP_CONTEXT", "yes", r"FLUXO_APP_CONTEXT'\] must be True or False, not 'yes'"),
    ("FLUXO_AUTO_MIGRATE", 1, r"FLUXO_AUTO_MIGRATE'\] must be True or False, not 1"),
    ("FLUXO_ERROR_HANDLERS", None, r"FLUXO_ERROR_HANDLERS'\] must be True or False"),
    (
        "FLUXO_JOIN_SESSION",
        "yes",
        r"FLUXO_JOIN_SESSION'\] must be True .* 'on_commit' .* not 'yes'",
    ),
    (
        "FLUXO_PARALLEL_THREADS",
        0,
        r"FLUXO_PARALLEL_THREADS'\] must be a whole number of at least 1",
    ),
    ("FLUXO_PARALLEL_THREADS", True, r"FLUXO_PARALLEL_THREADS'\] must be a whole number"),
]


@pytest.mark.parametrize(("key", "value", "message"), BAD_VALUES)
def test_an_unusable_value_is_refused_by_init_app_naming_its_key(
    apps: list[Flask], key: str, value: object, message: str
) -> None:
    config = {"FLUXO_STORE": "memory://", key: value}
    with error(message):
        bare_app(apps, config)


def test_an_unknown_key_is_refused_with_the_likely_one(apps: list[Flask]) -> None:
    with error(r"app.config has FLUXO_STORE_URL \(did you mean FLUXO_STORE\?\), FLUXO_ZZZ,"):
        bare_app(apps, {"FLUXO_STORE": "memory://", "FLUXO_STORE_URL": "x", "FLUXO_ZZZ": 1})


def test_the_defaults(apps: list[Flask]) -> None:
    app = bare_app(apps, {"FLUXO_STORE": "memory://"})
    settings = app.extensions["fluxo"].settings
    assert settings.app_context is True
    assert settings.auto_migrate is True
    assert settings.error_handlers is False
    assert settings.join_session == "auto"
    assert settings.workflows == ()
    assert settings.parallel_threads >= 1


def test_the_docs_reference_every_key() -> None:
    page = (ROOT / "docs" / "flask.md").read_text()
    table = set(re.findall(r"^\| `(FLUXO_\w+)` \|", page, re.MULTILINE))
    assert table == set(KEYS)


# -- workflows -----------------------------------------------------------------------------


def test_workflows_come_from_code_and_config(apps: list[Flask]) -> None:
    app = bare_app(
        apps,
        {"FLUXO_STORE": "memory://", "FLUXO_WORKFLOWS": ["tests.integration.flaskapp.see"]},
        workflows=[flaskapp.greet],
    )
    engine = app.extensions["fluxo"].engine()
    assert {w.name for w in engine.workflows} == {flaskapp.greet.name, flaskapp.see.name}


@pytest.mark.parametrize(
    "path",
    [
        "tests.integration.flaskapp",
        "tests.integration.flaskapp:see",
        "tests.integration.flaskapp.see",
    ],
)
def test_a_workflow_path_names_a_module_or_a_workflow(apps: list[Flask], path: str) -> None:
    app = bare_app(apps, {"FLUXO_STORE": "memory://", "FLUXO_WORKFLOWS": [path]})
    names = {w.name for w in app.extensions["fluxo"].engine().workflows}
    if path.endswith("see"):
        assert names == {flaskapp.see.name}
    else:
        assert names == {flaskapp.see.name, flaskapp.greet.name, flaskapp.relay.name}


WORKFLOW_ERRORS = [
    ("tests.integration.nowhere", r"no module named 'tests.integration.nowhere'|has no attribute"),
    ("nowhere_at_all", r"no module named 'nowhere_at_all'"),
    ("nowhere.at_all", r"importing 'nowhere' failed: No module named 'nowhere'"),
    ("tests.integration.flaskapp:nothing", r"module 'tests.integration.flaskapp' has no attribute"),
    ("tests.integration.flaskapp:whoami", r"'tests.integration.flaskapp:whoami' is Step, not a"),
    ("tests.integration.test_docs", r"module 'tests.integration.test_docs' defines no @fluxo"),
]


@pytest.mark.parametrize(("path", "message"), WORKFLOW_ERRORS)
def test_a_workflow_path_that_leads_nowhere_names_the_key(
    apps: list[Flask], path: str, message: str
) -> None:
    app = bare_app(apps, {"FLUXO_STORE": "memory://", "FLUXO_WORKFLOWS": [path]})
    with error(r"^app.config\['FLUXO_WORKFLOWS'\]: .*" + f"({message})"):
        app.extensions["fluxo"].engine()


def test_a_workflow_module_that_fails_to_import_names_the_key(
    apps: list[Flask], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "broken_flows.py").write_text("import not_installed_anywhere\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    app = bare_app(apps, {"FLUXO_STORE": "memory://", "FLUXO_WORKFLOWS": ["broken_flows"]})
    with error(r"importing 'broken_flows' failed: No module named 'not_installed_anywhere'"):
        app.extensions["fluxo"].engine()


def test_workflows_in_code_must_be_workflows() -> None:
    with error(r"takes a list of @fluxo.workflow functions, not 'x'"):
        Fluxo(workflows="x")  # type: ignore[arg-type]
    with error(r"holds .*whoami.*, which is not decorated with @fluxo.workflow"):
        Fluxo(workflows=[flaskapp.whoami])  # type: ignore[list-item]


# -- joining db.session --------------------------------------------------------------------


def test_starts_join_the_session_only_on_the_stores_database(
    apps: list[Flask], tmp_path: Path
) -> None:
    database = f"sqlite:///{tmp_path / 'app.db'}"
    same = shop_app(apps, {"SQLALCHEMY_DATABASE_URI": database, "FLUXO_STORE": database})
    other = shop_app(
        apps,
        {"SQLALCHEMY_DATABASE_URI": database, "FLUXO_STORE": f"sqlite:///{tmp_path / 'f.db'}"},
        name="other",
    )
    redis_like = shop_app(
        apps, {"SQLALCHEMY_DATABASE_URI": database, "FLUXO_STORE": "memory://"}, name="memory"
    )
    for app, mode in [(same, "join"), (other, "off"), (redis_like, "off")]:
        state = app.extensions["fluxo"]
        state.engine()
        assert state.join_session == mode, app.name


@pytest.mark.parametrize("store", ["memory://", "sqlite:///other.db"])
def test_joining_a_session_on_another_database_is_refused_by_init_app(
    apps: list[Flask], tmp_path: Path, store: str
) -> None:
    config = {
        "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'app.db'}",
        "FLUXO_STORE": store,
        "FLUXO_JOIN_SESSION": True,
    }
    with error(r"FLUXO_JOIN_SESSION'\] is True, but the store .* is not Flask-SQLAlchemy's"):
        shop_app(apps, config)


def test_joining_a_session_on_another_database_is_an_error_once_the_urls_are_known(
    apps: list[Flask], tmp_path: Path
) -> None:
    """Flask-SQLAlchemy configured after Fluxo: its database is known when the engine is built."""
    app = Flask("late-db")
    app.config.update({"FLUXO_STORE": "memory://", "FLUXO_JOIN_SESSION": True})
    Fluxo(app)
    apps.append(app)
    app.config["SQLALCHEMY_DATABASE_URI"] = f"sqlite:///{tmp_path / 'app.db'}"
    flaskapp.db.init_app(app)
    with error(r"FLUXO_JOIN_SESSION'\] is True, but the store \(memory://\) is not"):
        app.extensions["fluxo"].engine()


def test_joining_without_flask_sqlalchemy_is_an_error(apps: list[Flask]) -> None:
    for value, what in [(True, "join"), ("on_commit", "wait for")]:
        app = bare_app(apps, {"FLUXO_STORE": "memory://", "FLUXO_JOIN_SESSION": value})
        with error(rf"Flask-SQLAlchemy is not set up on this app .*no session to {what}"):
            app.extensions["fluxo"].engine()


def test_on_commit_is_kept_and_false_turns_joining_off(apps: list[Flask], tmp_path: Path) -> None:
    database = f"sqlite:///{tmp_path / 'app.db'}"
    for value, mode in [("on_commit", "on_commit"), (False, "off")]:
        app = shop_app(
            apps,
            {"SQLALCHEMY_DATABASE_URI": database, "FLUXO_JOIN_SESSION": value},
            name=f"app-{mode}",
        )
        state = app.extensions["fluxo"]
        state.engine()
        assert state.join_session == mode


SAME = [
    ("postgresql+psycopg://app:one@DB/shop", "postgres+psycopg2://other:two@db:5432/shop"),
    ("postgresql+psycopg://app@localhost/shop", "postgresql://app@127.0.0.1:5432/shop"),
    ("postgresql://app@[::1]/shop", "postgresql://app@localhost/shop"),
    ("postgresql://app@/shop?host=/run/postgresql", "postgresql://app@localhost/shop"),
    ("postgresql://shop@db", "postgresql://shop@db/shop"),  # the user's name by default
    ("mysql+pymysql://root@127.0.0.1/test", "mariadb://root@localhost:3306/test"),
    ("sqlite:////srv/app/./shop.db", "sqlite+pysqlite:////srv/app/shop.db"),
]
DIFFERENT = [
    ("postgresql://app@db/shop", "postgresql://app@db/other"),
    ("postgresql://app@db/shop", "postgresql://app@db2/shop"),
    ("postgresql://app@localhost/shop", "postgresql://app@localhost:5433/shop"),
    ("postgresql://app@db/shop", "mysql://app@db/shop"),
    ("sqlite:////srv/app/shop.db", "sqlite:////srv/app/fluxo.db"),
    ("sqlite://", "sqlite://"),  # in memory: one per connection
]


@pytest.mark.parametrize(("mine", "theirs"), SAME)
def test_same_database_sets_aside_driver_user_default_port_and_local_host_names(
    mine: str, theirs: str
) -> None:
    from fluxo.contrib.flask import _databases

    assert _databases.same_database(sa.make_url(mine), sa.make_url(theirs))
    assert _databases.same_database(sa.make_url(theirs), sa.make_url(mine))


@pytest.mark.parametrize(("mine", "theirs"), DIFFERENT)
def test_different_databases_are_told_apart(mine: str, theirs: str) -> None:
    from fluxo.contrib.flask import _databases

    assert not _databases.same_database(sa.make_url(mine), sa.make_url(theirs))


def test_a_relative_sqlite_store_is_in_the_instance_folder_as_flask_sqlalchemys(
    apps: list[Flask], tmp_path: Path
) -> None:
    """FLUXO_STORE = SQLALCHEMY_DATABASE_URI = "sqlite:///shop.db": one file, and joined."""
    app = Flask("relative", instance_path=str(tmp_path / "instance"))
    app.config["SQLALCHEMY_DATABASE_URI"] = app.config["FLUXO_STORE"] = "sqlite:///shop.db"
    flaskapp.db.init_app(app)
    Fluxo(app)
    apps.append(app)
    state = app.extensions["fluxo"]
    store = state.engine().store
    assert isinstance(store, sql.SQLStore)
    assert store.engine.url.database == str(tmp_path / "instance" / "shop.db")
    assert state.join_session == "join"


def test_a_relative_sqlite_store_without_flask_sqlalchemy_is_in_the_instance_folder(
    apps: list[Flask], tmp_path: Path
) -> None:
    app = Flask("alone", instance_path=str(tmp_path / "missing" / "instance"))
    app.config["FLUXO_STORE"] = "sqlite:///fluxo.db"
    Fluxo(app)
    apps.append(app)
    store = app.extensions["fluxo"].engine().store
    assert isinstance(store, sql.SQLStore)
    assert store.engine.url.database == str(tmp_path / "missing" / "instance" / "fluxo.db")


def test_a_sql_store_on_another_database_is_a_warning_when_joining_is_automatic(
    apps: list[Flask], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    app = shop_app(
        apps,
        {
            "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'app.db'}",
            "FLUXO_STORE": f"sqlite:///{tmp_path / 'fluxo.db'}",
        },
    )
    with caplog.at_level("WARNING", logger="fluxo.contrib.flask"):
        app.extensions["fluxo"].engine()
    [record] = [r for r in caplog.records if r.name.startswith("fluxo.contrib.flask")]
    assert record.levelname == "WARNING"
    message = record.getMessage()
    assert str(tmp_path / "fluxo.db") in message
    assert str(tmp_path / "app.db") in message
    assert "starts inside a db.session transaction will not join it" in message


def test_no_warning_when_joining_is_chosen_or_the_store_is_not_sql(
    apps: list[Flask], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    database = f"sqlite:///{tmp_path / 'app.db'}"
    other = f"sqlite:///{tmp_path / 'fluxo.db'}"
    configs = [
        {"FLUXO_STORE": other, "FLUXO_JOIN_SESSION": False},
        {"FLUXO_STORE": other, "FLUXO_JOIN_SESSION": "on_commit"},
        {"FLUXO_STORE": "memory://"},
        {},
    ]
    with caplog.at_level("WARNING", logger="fluxo.contrib.flask"):
        for index, config in enumerate(configs):
            app = shop_app(apps, {"SQLALCHEMY_DATABASE_URI": database, **config}, f"a{index}")
            app.extensions["fluxo"].engine()
    assert [r for r in caplog.records if r.name.startswith("fluxo.contrib.flask")] == []


@pytest.mark.postgres
def test_postgres_on_localhost_and_127_0_0_1_is_one_database(
    apps: list[Flask], fresh_postgres_url: str
) -> None:
    url = sa.make_url(fresh_postgres_url)
    if url.host not in ("localhost", "127.0.0.1") or (url.port or 5432) != 5432:
        pytest.skip("the test server is not on this machine's default port")
    app = shop_app(
        apps,
        {
            "SQLALCHEMY_DATABASE_URI": url.set(
                drivername="postgresql+psycopg", host="localhost", port=None
            ).render_as_string(hide_password=False),
            "FLUXO_STORE": url.set(host="127.0.0.1", port=url.port or 5432).render_as_string(
                hide_password=False
            ),
            "FLUXO_JOIN_SESSION": True,  # accepted by init_app: the same database
        },
    )
    app.extensions["fluxo"].engine()
    assert app.extensions["fluxo"].join_session == "join"


# -- apps, contexts and the extension object -----------------------------------------------


def test_one_extension_serves_several_apps_each_with_its_engine(
    apps: list[Flask], tmp_path: Path
) -> None:
    ext = Fluxo(workflows=[flaskapp.greet])
    one, two = Flask("one"), Flask("two")
    one.config["FLUXO_STORE"] = f"sqlite:///{tmp_path / 'one.db'}"
    two.config["FLUXO_STORE"] = "memory://"
    for app in (one, two):
        ext.init_app(app)
        apps.append(app)
    with one.app_context():
        first = ext.engine
        assert isinstance(first.store, sql.SQLStore)
    with two.app_context():
        second = ext.engine
        assert isinstance(second.store, memory.MemoryStore)
    assert ext.get_engine(one) is first
    assert ext.get_engine(two) is second


def test_the_engine_outside_an_app_context(apps: list[Flask]) -> None:
    ext = Fluxo()
    app = Flask("late")
    app.config["FLUXO_STORE"] = "memory://"
    ext.init_app(app)
    apps.append(app)
    with pytest.raises(RuntimeError, match="no Flask app to take the Fluxo engine of"):
        ext.engine
    assert ext.get_engine(app) is ext.get_engine(app)

    given = bare_app(apps, {"FLUXO_STORE": "memory://"})
    mine = given.extensions["fluxo"].extension
    assert mine.engine is mine.get_engine(given)  # Fluxo(app): that app, even outside


def test_an_app_without_this_extension_is_named(apps: list[Flask]) -> None:
    ext = Fluxo()
    other = bare_app(apps, {"FLUXO_STORE": "memory://"})
    with error(r"this Fluxo object is not set up on app 'bare'; call init_app\(app\)"):
        ext.get_engine(other)
    with error(r"this Fluxo object is not set up on app 'plain'"):
        ext.get_engine(Flask("plain"))


def test_init_app_twice_is_an_error(apps: list[Flask]) -> None:
    app = bare_app(apps, {"FLUXO_STORE": "memory://"})
    with error(r"Fluxo is already set up on app 'bare'; call init_app once per app"):
        Fluxo(app)
    with error("init_app\\(\\) takes a Flask app, not 'app'"):
        Fluxo().init_app("app")  # type: ignore[arg-type]


def test_close_then_use_builds_a_new_engine(apps: list[Flask]) -> None:
    app = bare_app(apps, {"FLUXO_STORE": "memory://"})
    ext = app.extensions["fluxo"].extension
    first = ext.get_engine(app)
    ext.close(app)
    with pytest.raises(fluxo.RunStateError, match="this Engine is closed"):
        first.list_runs()
    assert ext.get_engine(app) is not first


# -- HTTP errors ---------------------------------------------------------------------------


@pytest.mark.parametrize("handlers", [True, False])
def test_error_handlers_answer_fluxos_errors_with_http_statuses(
    apps: list[Flask], tmp_path: Path, handlers: bool
) -> None:
    app = shop_app(
        apps,
        {
            "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'app.db'}",
            "FLUXO_STORE": "memory://",
            "FLUXO_ERROR_HANDLERS": handlers,
        },
    )
    client = app.test_client()
    unknown = client.post("/runs/nobody/signal")
    assert client.post("/runs/r1/start", json={"name": "ana"}).status_code == 200
    conflict = client.post("/runs/r1/start", json={"name": "bob"})
    if handlers:
        assert unknown.status_code == 404
        assert "no run with id &#39;nobody&#39;" in unknown.get_data(as_text=True)
        assert conflict.status_code == 409
    else:
        assert unknown.status_code == conflict.status_code == 500


def test_error_handlers_go_through_the_apps_own_handlers(apps: list[Flask]) -> None:
    app = Flask("json")
    app.config["FLUXO_STORE"] = "memory://"
    ext = Fluxo(app)
    apps.append(app)
    register_error_handlers(app)

    @app.errorhandler(404)
    def as_json(exc: Exception) -> tuple[dict[str, str], int]:
        return {"error": str(getattr(exc, "description", exc))}, 404

    @app.post("/cancel/<run_id>")
    def cancel(run_id: str) -> dict[str, str]:
        ext.engine.cancel(run_id)
        return {}

    @app.get("/down")
    def down() -> dict[str, str]:
        raise fluxo.StoreUnavailableError("the database is down")

    @app.get("/finished")
    def finished() -> dict[str, str]:
        raise fluxo.CancelPendingError("run r is being cancelled")

    client = app.test_client()
    answer = client.post("/cancel/r-9")
    assert answer.status_code == 404
    assert answer.get_json() == {"error": "no run with id 'r-9'"}
    assert client.get("/down").status_code == 503
    assert client.get("/finished").status_code == 409


def test_a_503_tells_the_client_nothing_of_the_store_and_logs_the_cause(
    apps: list[Flask], caplog: pytest.LogCaptureFixture
) -> None:
    app = bare_app(apps, {"FLUXO_STORE": "memory://", "FLUXO_ERROR_HANDLERS": True})

    @app.get("/down")
    def down() -> dict[str, str]:
        raise fluxo.StoreUnavailableError(
            "the postgresql database at postgresql://shop_user:***@db.internal:5432/shop_prod "
            "is unavailable: connection refused"
        )

    with caplog.at_level("WARNING", logger="fluxo.contrib.flask"):
        answer = app.test_client().get("/down")
    assert answer.status_code == 503
    body = answer.get_data(as_text=True)
    assert "the workflow store is unavailable; try again later" in body
    for secret in ("shop_user", "db.internal", "shop_prod", "postgresql", "refused"):
        assert secret not in body
    [record] = caplog.records
    assert record.levelname == "WARNING"
    assert "GET /down with 503" in record.getMessage()
    assert "shop_user:***@db.internal:5432/shop_prod" in record.getMessage()
