"""`grade serve`: grade written answers in the browser.

- `scoring`: the rules that turn rubric items + an optional score override into a question's score.
- `store`: manual grades in REPORTS_DIR/grades.sqlite (standard library sqlite3, one transaction per decision).
- `classroom`: the reports folder as the app sees it (results.json files, cached, reloaded when they change).
- `groups`: answers to one question grouped when near-identical (one grade fits all), exact duplicates flagged.
- `markup`: an answer's Markdown -> HTML with maths left for KaTeX in the browser.
- `rendering`: re-rendering reports after hand grading, as a background job with progress.
- `app`: the Flask app (pages, JSON API, access control: sign-in token, CSRF).

`store` and `scoring` import nothing but the standard library, so `grade report` / `grade export` read the
database without the web stack installed.
"""
