"""Operator reports over the SQL store, shared by `novita-lifecycle report` and
`GET /api/reports/{name}`.

    params.py      parse and validate a request (names, window, grouping) → `ReportQuery`
    fleet.py, usage.py, provisioning.py, reliability.py
                   assemble one report from `service.db.reports` queries (no SQL here)
    run.py         the name → report table and `run_report`
    render.py      table / CSV / JSON output
    model.py       sections of typed columns (percentiles: `service.percentiles`);
    intervals.py   what usage means, and the day spread used on the SQL results
"""
