"""Grades a TA enters by hand for the written answers, kept in REPORTS_DIR/grades.sqlite.

- `scoring`: the rules that turn rubric items + an optional score override into a question's score.
- `store`: the database (standard library sqlite3, one transaction per decision), and applying its decisions
  to results (`apply_stored_grades`, `stored_entries`).

`grade serve` writes the database; the gradebook (`grader.batch.collect_results`), `grade report` and
`grade export` read it: all of them import it from here, below the web app. Both modules need only the standard
library (and grader.report.manual to apply), so reading grades never needs the web stack.
Grades from a CSV file instead (manual.csv) are grader/report/manual.py's.
"""
