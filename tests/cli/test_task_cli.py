import io

import pytest

from podium.cli.job import NO_ANSWER, OK, SOME_FAILED, summarize
from podium.cli.main import main
from podium.cli.task import parse_nodes, parse_params
from podium.errors import ValidationError


def test_nodes_come_as_a_comma_list_or_a_file(tmp_path):
    assert parse_nodes("web-01, web-02,,web-03") == ["web-01", "web-02", "web-03"]
    listing = tmp_path / "nodes.txt"
    listing.write_text("web-01\nweb-02\n\n")
    assert parse_nodes(f"@{listing}") == ["web-01", "web-02"]
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
