"""`grade serve`: grade written answers in the browser.

- `scoring`: the rules that turn rubric items + an optional score override into a question's score.
- `store`: manual grades in REPORTS_DIR/grades.sqlite (standard library sqlite3, one transaction per decision).
- `classroom`: the reports folder as the app sees it (results.json files, cached, reloaded when they change).
- `groups`: answers to one question clustered by similarity (TF-IDF + agglomerative), exact duplicates flagged.
- `markup`: an answer's Markdown -> HTML with maths left for KaTeX in the browser.
- `app`: the Flask app (pages, JSON API, access control, CSRF).

`store` and `scoring` import nothing but the standard library, so `grade report` / `grade export` read the
database without the web stack installed.
"""
