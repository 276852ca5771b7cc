"""`grade serve`: grade written answers in the browser.

- `classroom`: the reports folder as the app sees it (results.json files, cached, reloaded when they change).
- `groups`: answers to one question grouped when near-identical (one grade fits all), exact duplicates flagged.
- `markup`: an answer's Markdown -> HTML with maths left for KaTeX in the browser.
- `rendering`: re-rendering reports after hand grading, as a background job with progress.
- `app`: the Flask app (pages, JSON API, access control: sign-in token, CSRF).

The grades it writes (REPORTS_DIR/grades.sqlite) and the rules that score them live below the web app, in
grader.manual_grades: the gradebook, `grade report` and `grade export` read them without the web stack.
"""
