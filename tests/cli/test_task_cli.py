import io

import pytest

from podium.cli.job import NO_ANSWER, OK, SOME_FAILED, summarize
from podium.cli.main import main
from podium.cli.target import parse_nodes
from podium.cli.task import parse_params, typed_value
from podium.errors import ValidationError


def test_nodes_come_as_a_comma_list_or_a_file(tmp_path):
    assert parse_nodes("web-01, web-02,,web-03") == ["web-01", "web-02", "web-03"]
    listing = tmp_path / "nodes.txt"
    listing.write_text("# the web tier\nweb-01\nweb-02  # primary\n\nweb-03,web-04\n")
    assert parse_nodes(f"@{listing}") == ["web-01", "web-02", "web-03", "web-04"]
    with pytest.raises(ValidationError, match="names no node"):
        parse_nodes(" , ")
    with pytest.raises(ValidationError, match="cannot read"):
        parse_nodes(f"@{tmp_path / 'missing'}")


def test_parameters_come_as_pairs_or_json_but_not_both(tmp_path):
    assert parse_params(["message=a=b", "list=[1, 2]", "text=[not json"], None) == {
        "message": "a=b",
        "list": [1, 2],
        "text": "[not json",
    }
    assert parse_params([], '{"count": 3}') == {"count": 3}
    params = tmp_path / "p.json"
    params.write_text('{"x": true}')
    assert parse_params([], f"@{params}") == {"x": True}
    with pytest.raises(ValidationError, match="not both"):
        parse_params(["a=1"], "{}")
    with pytest.raises(ValidationError, match="not KEY=VALUE"):
        parse_params(["oops"], None)
    with pytest.raises(ValidationError, match="JSON object"):
        parse_params([], "[1]")


@pytest.mark.parametrize(
    ("raw", "type_text", "value"),
    [
        ("5432", "Optional[String[1]]", "5432"),
        ("5432", "Integer", 5432),
        ("5432", "Variant[String, Integer]", "5432"),
        ("1.5", "Float", 1.5),
        ("true", "Boolean", True),
        ("true", "String", "true"),
        ("null", "Optional[Integer]", None),
        ('["a","b"]', "Array[String]", ["a", "b"]),
        ('{"mode": "fast"}', "Struct[{mode => String}]", {"mode": "fast"}),
        ("three", "Integer", "three"),  # not JSON: the server says what is wrong
        ("[1, 2]", None, [1, 2]),  # undeclared: only arrays and objects are JSON
        ("3", None, "3"),
        ("[oops", None, "[oops"),
        ("NaN", "Float", "NaN"),
    ],
)
def test_a_pairs_value_follows_the_parameters_type(raw, type_text, value):
    assert typed_value(raw, type_text) == value


def test_typed_pairs_and_a_key_given_twice():
    types = {"count": "Integer", "name": "String"}
    assert parse_params(["count=3", "name=007"], None, types) == {"count": 3, "name": "007"}
    with pytest.raises(ValidationError, match="'count' is given twice"):
        parse_params(["count=3", "count=4"], None, types)


def test_pairs_may_follow_options(capsys, tmp_path):
    from podium.pki.ca import CertificateAuthority

    ca = CertificateAuthority.init(tmp_path / "ca")
    code = main(
        ["task", "run", "podium::echo", "--nodes", "a", "message=x", "--server-url",
         "https://127.0.0.1:9", "--cacert", str(ca.ca_cert_path), "other=y"]
    )  # fmt: skip
    assert code == 1  # parsed, then the server could not be reached
    assert "cannot reach the server" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["job", "show", "1", "stray=1"])
    assert "unrecognized arguments: stray=1" in capsys.readouterr().err


def job(states, total):
    return {"node_states": states, "node_count": total, "duration": 0.5, "state": "finished"}


@pytest.mark.parametrize(
    ("states", "nodes", "code", "line"),
    [
        ({"finished": 2}, [{"state": "finished"}] * 2, OK, "2/2 nodes succeeded"),
        (
            {"finished": 1, "failed": 1},
            [{"state": "finished"}, {"state": "failed"}],
            SOME_FAILED,
            "1/2",
        ),
        ({"failed": 1}, [{"state": "failed", "result": {"_error": {}}}], SOME_FAILED, "0/1"),
        ({"failed": 2}, [{"state": "failed", "result": None}] * 2, NO_ANSWER, "0/2"),
    ],
)
def test_the_summary_line_and_exit_code_follow_the_node_states(states, nodes, code, line):
    out = io.StringIO()
    assert summarize(job(states, len(nodes)), nodes, out) == code
    assert f"Job completed. {line}" in out.getvalue()


def test_task_run_with_an_unusable_ca_file_says_what_to_fix(capsys, tmp_path):
    cacert = tmp_path / "ca.pem"
    cacert.write_text("")
    code = main(
        [
            "task",
            "run",
            "podium::echo",
            "message=x",
            "--nodes",
            "a",
            "--server-url",
            "https://127.0.0.1:9",
            "--cacert",
            str(cacert),
        ]
    )
    assert code == 1
    err = capsys.readouterr().err
    assert "holds no usable CA certificate" in err


def test_task_run_without_a_ca_certificate_says_how_to_give_one(capsys, tmp_path, monkeypatch):
    monkeypatch.delenv("PODIUM_CACERT", raising=False)
    code = main(
        ["task", "run", "podium::echo", "--nodes", "a", "--cacert", str(tmp_path / "no.pem")]
    )
    assert code == 1
    assert "pass --cacert or set PODIUM_CACERT" in capsys.readouterr().err


def test_task_run_without_a_reachable_server_says_what_to_check(capsys, tmp_path):
    from podium.pki.ca import CertificateAuthority

    ca = CertificateAuthority.init(tmp_path / "ca")
    code = main(
        ["task", "run", "podium::echo", "message=x", "--nodes", "a",
         "--server-url", "https://127.0.0.1:9", "--cacert", str(ca.ca_cert_path)]
    )  # fmt: skip
    assert code == 1
    err = capsys.readouterr().err
    assert "cannot reach the server at https://127.0.0.1:9" in err
    assert "PODIUM_SERVER_URL" in err
