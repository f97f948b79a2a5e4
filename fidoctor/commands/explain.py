"""``fidoctor explain ID``: a finding's page (what, why, evidence, fixes, references)."""

from __future__ import annotations

import click

from fidoctor.completion import complete_finding_ids


@click.command("explain")
@click.argument("finding_id", required=False, shell_complete=complete_finding_ids)
@click.option("--list", "list_ids", is_flag=True, help="List every finding id with its page.")
def command(finding_id, list_ids) -> int:
    """Print the page of FINDING_ID (as `ruff rule X` does for a rule).

    \b
    Examples:
      fidoctor explain cudart-missing-symbol
      fidoctor explain --list
    """
    from fidoctor import findingdocs
    from fidoctor.errors import FidoctorError
    from fidoctor.ids import check_ids, finding_ids
    from fidoctor.probes import RETIRED

    known = finding_ids() | set(RETIRED)
    if list_ids:
        for fid in sorted(known):
            mark = "  (retired)" if fid in RETIRED else ""
            click.echo(f"{fid}  {findingdocs.doc_ref(fid)}{mark}")
        return 0
    if not finding_id:
        raise FidoctorError("fidoctor explain: which finding? give an id",
                            "fidoctor explain --list shows them all")
    check_ids("explain", [finding_id], known, "finding ids")
    text = findingdocs.page(finding_id)
    if text is None:
        raise FidoctorError(f"no page for {finding_id} in this installation "
                            f"({findingdocs.PAGES})", "reinstall fidoctor")
    click.echo(text.rstrip("\n"))
    return 0
