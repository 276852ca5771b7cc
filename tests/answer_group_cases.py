"""A labelled set of written answers for measuring answer groups (`grader.serve.groups`).

Each answer carries a label: two answers with the same label get the same grade from the key, two with
different labels do not. A grouping is safe when no group holds two labels (one `g` would give a wrong answer
the right one's grade); it is useful when answers with the same label share groups.

Made of three parts:
- hand-written answers to five questions (the course's own: reparameterization, encoder log-probability,
  PPCA's closed form, the ELBO, the mini-batch k-means rate), several correct phrasings and several
  mistakes per question, each mistake its own label; the example class's PPCA pair (frank right, grace wrong)
  among them;
- `variants`: mechanical rewrites that never change a grade (spacing, line breaks, case, final period,
  Markdown emphasis, TeX spelt another way, one typo in a long word): same label;
- `mutants`: mechanical one-token changes that do change a grade (a sign, a digit, a symbol swapped for another,
  a word for its opposite, a dropped term, an inserted "not"): a new label each.
"""

from __future__ import annotations

import random
import re

# question -> [(label, answer)]; labels starting with "ok" are correct answers
HAND = {
    "reparam": [
        ("ok", r"We sample $\epsilon \sim \mathcal{N}(0, I)$ and set $z = \mu + \sigma \odot \epsilon$, so gradients flow through $\mu$ and $\sigma$."),
        ("ok", "z = mu + sigma * eps with eps drawn from a standard normal, so the sample is a differentiable function of mu and sigma."),
        ("ok", r"Write $z = \mu_\phi(x) + \sigma_\phi(x)\epsilon$ with $\epsilon \sim N(0,1)$: the randomness no longer depends on $\phi$."),
        ("sign", r"We sample $\epsilon \sim \mathcal{N}(0, I)$ and set $z = \mu - \sigma \odot \epsilon$, so gradients flow through $\mu$ and $\sigma$."),
        ("variance", r"We sample $\epsilon \sim \mathcal{N}(0, I)$ and set $z = \mu + \sigma^2 \odot \epsilon$, so gradients flow through $\mu$ and $\sigma$."),
        ("logvar", "z = mu + logvar * eps with eps drawn from a standard normal, so the sample is a differentiable function of mu and sigma."),
        ("uniform", "z = mu + sigma * eps with eps drawn from a uniform distribution, so the sample is a differentiable function of mu and sigma."),
        ("no-formula", "The trick moves the randomness into an auxiliary variable so that we can backpropagate through the sampling."),
        ("wrong-claim", "The trick makes the KL term analytic, so we can backpropagate through the sampling."),
    ],
    "encoder": [
        ("ok", r"$$\log q(z|x) = -\frac{1}{2}\sum_l \left(\log 2\pi + \log\sigma_l^2 + \frac{(z_l - \mu_l)^2}{\sigma_l^2}\right)$$"),
        ("ok", r"$\log q(z|x) = -\frac{L}{2}\log 2\pi - \sum_l \log\sigma_l - \frac{1}{2}\sum_l (z_l-\mu_l)^2/\sigma_l^2$"),
        ("no-const", r"$$\log q(z|x) = -\frac{1}{2}\sum_l \left(\log\sigma_l^2 + \frac{(z_l - \mu_l)^2}{\sigma_l^2}\right)$$"),
        ("sign", r"$$\log q(z|x) = \frac{1}{2}\sum_l \left(\log 2\pi + \log\sigma_l^2 + \frac{(z_l - \mu_l)^2}{\sigma_l^2}\right)$$"),
        ("no-square", r"$$\log q(z|x) = -\frac{1}{2}\sum_l \left(\log 2\pi + \log\sigma_l^2 + \frac{(z_l - \mu_l)}{\sigma_l^2}\right)$$"),
        ("sigma-not-var", r"$$\log q(z|x) = -\frac{1}{2}\sum_l \left(\log 2\pi + \log\sigma_l + \frac{(z_l - \mu_l)^2}{\sigma_l^2}\right)$$"),
        ("mean", r"$$\log q(z|x) = -\frac{1}{2}\mathrm{mean}_l \left(\log 2\pi + \log\sigma_l^2 + \frac{(z_l - \mu_l)^2}{\sigma_l^2}\right)$$"),
    ],
    "ppca": [
        # the example class: frank (right) and grace (sigma2 = the smallest eigenvalue, log det C missing)
        ("ok", r"With $S = \frac{1}{N}\sum_n (x_n - \bar x)(x_n - \bar x)^\top$ and eigenvalues $\lambda_1 \ge \dots \ge \lambda_D$: "
               r"$\mu = \bar x$, $\sigma^2 = \frac{1}{D - q}\sum_{i > q} \lambda_i$, $W = U_q(\Lambda_q - \sigma^2 I)^{1/2}$. "
               r"The log-likelihood is exact: $\log \mathcal{N}(x; \mu, C)$ with $C = WW^\top + \sigma^2 I$, i.e. "
               r"$-\frac{D}{2}\log 2\pi - \frac{1}{2}\log\det C - \frac{1}{2}(x-\mu)^\top C^{-1}(x-\mu)$."),
        ("smallest-eig", r"$\sigma^2$ is the smallest eigenvalue $\lambda_D$ of the covariance and $W = U_q(\Lambda_q - \sigma^2 I)^{1/2}$; "
                         r"the log-likelihood is $-\frac{D}{2}\log 2\pi - \frac{1}{2}(x-\mu)^\top C^{-1}(x-\mu)$."),
        ("ok", r"$\mu$ is the sample mean, $\sigma^2$ the average of the discarded eigenvalues $\frac{1}{D-q}\sum_{i=q+1}^D \lambda_i$, "
               r"$W = U_q(\Lambda_q - \sigma^2 I)^{1/2}R$ for any rotation $R$; log-likelihood of $\mathcal{N}(\mu, WW^\top + \sigma^2 I)$."),
        ("largest-eig", r"$\mu$ is the sample mean, $\sigma^2$ the largest of the discarded eigenvalues, "
                        r"$W = U_q(\Lambda_q - \sigma^2 I)^{1/2}R$ for any rotation $R$; log-likelihood of $\mathcal{N}(\mu, WW^\top + \sigma^2 I)$."),
        ("no-minus", r"$\mu$ is the sample mean, $\sigma^2$ the average of the discarded eigenvalues $\frac{1}{D-q}\sum_{i=q+1}^D \lambda_i$, "
                     r"$W = U_q\Lambda_q^{1/2}R$ for any rotation $R$; log-likelihood of $\mathcal{N}(\mu, WW^\top + \sigma^2 I)$."),
        ("no-noise", r"$\mu$ is the sample mean, $\sigma^2$ the average of the discarded eigenvalues $\frac{1}{D-q}\sum_{i=q+1}^D \lambda_i$, "
                     r"$W = U_q(\Lambda_q - \sigma^2 I)^{1/2}R$ for any rotation $R$; log-likelihood of $\mathcal{N}(\mu, WW^\top)$."),
    ],
    "elbo": [
        ("ok", r"ELBO $= \mathbb{E}_q[\log p(x|z)] - \mathrm{KL}(q(z|x)\,\|\,p(z))$, optimised with Adam (lr $10^{-3}$, batch 128, 20 epochs)."),
        ("kl-sign", r"ELBO $= \mathbb{E}_q[\log p(x|z)] + \mathrm{KL}(q(z|x)\,\|\,p(z))$, optimised with Adam (lr $10^{-3}$, batch 128, 20 epochs)."),
        ("kl-order", r"ELBO $= \mathbb{E}_q[\log p(x|z)] - \mathrm{KL}(p(z)\,\|\,q(z|x))$, optimised with Adam (lr $10^{-3}$, batch 128, 20 epochs)."),
        ("no-optimiser", r"ELBO $= \mathbb{E}_q[\log p(x|z)] - \mathrm{KL}(q(z|x)\,\|\,p(z))$."),
        ("ok", "We maximise the ELBO: the Bernoulli log-likelihood of the pixels minus the analytic KL to N(0, I). Adam, learning rate 0.001, batch size 128, 20 epochs."),
        ("minimise", "We minimise the ELBO: the Bernoulli log-likelihood of the pixels minus the analytic KL to N(0, I). Adam, learning rate 0.001, batch size 128, 20 epochs."),
        ("gaussian", "We maximise the ELBO: the Gaussian log-likelihood of the pixels minus the analytic KL to N(0, I). Adam, learning rate 0.001, batch size 128, 20 epochs."),
    ],
    "kmeans-rate": [
        ("ok", r"With $\eta_k = 1/n_k$, where $n_k$ counts the points assigned to centre $k$ so far, the update is a running average, i.e. Lloyd's mean."),
        ("constant", r"With a constant $\eta = 0.01$ the update is a running average, i.e. Lloyd's mean."),
        ("inverse-t", r"With $\eta_k = 1/t$, where $t$ counts the mini-batches seen so far, the update is a running average, i.e. Lloyd's mean."),
        ("ok", "eta = 1 / n_k with n_k the number of points ever assigned to cluster k: then each centre is exactly the mean of its points (unbiased)."),
        ("biased", "eta = 1 / n_k with n_k the number of points ever assigned to cluster k: then each centre is not exactly the mean of its points (biased)."),
    ],
}

# rewrites that never change the grade
_TYPO_WORD = re.compile(r"(?<![\\\w])([a-z]{8,})(?!\w)")


def _outside_maths(text: str, fn) -> str:
    parts = re.split(r"(\$\$.+?\$\$|\$[^$]+?\$)", text, flags=re.S)
    return "".join(p if i % 2 else fn(p) for i, p in enumerate(parts))


def variants(text: str, seed: int) -> list[tuple[str, str]]:
    """(kind, rewrite) pairs that keep the grade."""
    rng = random.Random(seed)
    out = [("spacing", re.sub(r" ", lambda m: "  " if rng.random() < 0.2 else " ", text)),
           ("line breaks", re.sub(r", ", lambda m: ",\n" if rng.random() < 0.5 else ", ", text, count=3)),
           ("case", text[:1].swapcase() + text[1:] if text[:1].isalpha() else text.upper() if "$" not in text else text),
           ("final period", text.rstrip(".") if text.endswith(".") else text + "."),
           ("tex spacing", text.replace(r"\frac", r"\tfrac").replace("(", r"\left(", 1).replace(")", r"\right)", 1)
            if r"\frac" in text and "$" in text else text.replace(" = ", "=")),
           ("filler", "Basically, " + text[:1].lower() + text[1:] if text[:1].isalpha() else "We note: " + text)]
    words = _TYPO_WORD.findall(_outside_maths(text, lambda p: p))
    words = [w for w in words if w not in ("sigma", "logvar")]
    if words:
        w = words[seed % len(words)]
        i = len(w) // 2
        out.append(("typo", text.replace(w, w[:i] + w[i + 1:], 1)))
        out.append(("emphasis", text.replace(w, f"**{w}**", 1)))
    return [(k, v) for k, v in out if v != text]


# one-token edits that change the grade
_OPPOSITES = [("maximise", "minimise"), ("smallest", "largest"), ("average", "sum"), ("unbiased", "biased"),
              ("Bernoulli", "Gaussian"), ("standard normal", "uniform distribution"), ("exact", "approximate"),
              ("mu", "sigma"), ("constant", "decaying")]


def mutants(text: str) -> list[tuple[str, str]]:
    """(kind, mutant) pairs: each a mistake the key charges."""
    out = []
    for a, b in (("+", "-"), ("-", "+"), (r"\sigma", r"\mu"), (r"\mu", r"\sigma"), (r"\log", r"\exp"),
                 (r"\sum", r"\prod"), ("^2", "^3"), ("^\\top", "")):
        if a in text:
            out.append((f"{a} -> {b}", text.replace(a, b, 1)))
    digit = re.search(r"(?<![\\\w])\d", text)
    if digit:
        d = digit.group(0)
        out.append(("digit", text[:digit.start()] + str((int(d) + 1) % 10) + text[digit.end():]))
    for a, b in _OPPOSITES:
        for x, y in ((a, b), (b, a)):
            if re.search(rf"\b{re.escape(x)}\b", text):
                out.append((f"{x} -> {y}", re.sub(rf"\b{re.escape(x)}\b", y, text, count=1)))
    term = re.search(r" [-+] \\frac\{1\}\{2\}\\log\\det C", text) or re.search(r" \+ \\log\\sigma_l\^2", text)
    if term:
        out.append(("dropped term", text[:term.start()] + text[term.end():]))
    is_ = re.search(r"\bis\b", text)
    if is_:
        out.append(("not", text[:is_.end()] + " not" + text[is_.end():]))
    return [(k, v) for k, v in out if v != text]


def labelled_set(seed: int = 0) -> dict[str, dict[str, tuple[str, str]]]:
    """question -> {answer id: (label, text)}: the hand-written answers, their variants and their mutants."""
    out: dict[str, dict[str, tuple[str, str]]] = {}
    for q, answers in HAND.items():
        table = out.setdefault(q, {})
        for i, (label, text) in enumerate(answers):
            base = f"{q}.{i}"
            table[base] = (f"{q}:{label}", text)
        seen = {" ".join(t.split()) for _, t in table.values()}
        for i, (label, text) in enumerate(answers):
            base = f"{q}.{i}"
            made = [(f"{base}~{kind}", f"{q}:{label}", v) for kind, v in variants(text, seed + i)]
            made += [(f"{base}!{kind}", f"{q}:{label}!{kind}", v) for kind, v in mutants(text)]
            for key, lab, v in made:
                if " ".join(v.split()) not in seen:  # a mutant that is another hand-written answer keeps its label
                    seen.add(" ".join(v.split()))
                    table[key] = (lab, v)
    return out


def measure(group_fn, seed: int = 0) -> dict:
    """Run `group_fn(student -> text) -> groups` on every question of the labelled set.

    Returns counts: answers, groups, mixed (groups holding two labels), wrong_pairs (pairs of answers with
    different labels in one group), variants_joined / variants (rewrites grouped with their original), and
    the mixed groups themselves (list of label sets) for the message of a failing test."""
    stats = {"answers": 0, "groups": 0, "mixed": 0, "wrong_pairs": 0, "variants_joined": 0, "variants": 0,
             "examples": []}
    for q, table in labelled_set(seed).items():
        groups = group_fn({a: text for a, (_, text) in table.items()})
        group_of = {m: g.id for g in groups for m in g.members}
        stats["answers"] += len(table)
        stats["groups"] += len(groups)
        for g in groups:
            labels = [table[m][0] for m in g.members]
            if len(set(labels)) > 1:
                stats["mixed"] += 1
                stats["wrong_pairs"] += sum(1 for i in range(len(labels)) for j in range(i) if labels[i] != labels[j])
                stats["examples"].append(sorted(g.members))
        for a in table:
            if "~" in a:
                stats["variants"] += 1
                stats["variants_joined"] += group_of[a] == group_of[a.split("~")[0]]
    return stats
