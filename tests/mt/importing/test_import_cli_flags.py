"""mt-import's flags come from ImportConfig (built by keyword)."""

from mt.common.flags import from_args
from mt.importing import cli


def test_import_flags_by_keyword():
    args = cli.build_parser().parse_args(
        ["model/", "--format", "fairseq", "--out", "o", "--dict", "d.txt", "--langs", "a,b", "--dtype", "bfloat16"]
    )
    cfg = from_args(cli.ImportConfig, args)
    assert cfg == cli.ImportConfig(
        src="model/", fmt="fairseq", out="o", dict_path="d.txt", langs="a,b", dtype="bfloat16"
    )
