"""The documents describe the product as it is now, and their links lead somewhere.

- README.md stays short: at most README_MAX_LINES lines.
- README.md, RELEASING.md, docs/*.md and the Python sources (docstrings, comments and messages alike) of the
  package, benchmarks, examples, tests and hubconf.py hold no account of how the work was done: none of DIARY_PATTERNS.
  History belongs in git; a figure belongs in the docs with its CPU and the command that made it.
- Every relative link in README.md and docs/*.md names a file in the repository, every #anchor a heading of its
  Markdown file, and every `<!-- results: PATH -->` comment a results file kept in the repository.

Plain text scans of about a hundred files: milliseconds.
"""
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README_MAX_LINES = 300
DOCUMENTS = [ROOT / 'README.md', ROOT / 'RELEASING.md', *sorted((ROOT / 'docs').glob('*.md'))]
LINKED_DOCUMENTS = [ROOT / 'README.md', *sorted((ROOT / 'docs').glob('*.md'))]
SOURCE_DIRS = ('timm_mobileformer', 'benchmarks', 'examples', 'tests')
THIS_FILE = Path(__file__).resolve()
TIMM_SUITE = ROOT / 'tests' / 'timm_suite'  # timm's own tests, fetched by tests/fetch_timm_tests.py: not ours


def after(phrases: str, keyword: str) -> str:
    """`keyword` right after one of the comma-separated `phrases` (single spaces or line breaks between words).
    The keyword leads the pattern and the phrases are checked behind it, because re scans fast for a leading
    literal and some 30 times slower for a pattern led by a group or by \\b."""
    behind = [r'\W' + phrase.strip().replace(' ', r'\s') + r'\s' + keyword for phrase in phrases.split(',')]
    return keyword + '(?:' + '|'.join(f'(?<={b})' for b in behind) + r')\b'


# Words about how the work was organised or how one run went, not about the product, matched in lower-cased
# text. "session" alone is ONNX Runtime's InferenceSession and stays allowed; "helper" alone is a function.
DIARY_PATTERNS = [re.compile(p) for p in (
    r'stop(?<!\wstop)s?\s+\d',                           # "stop 17", "stops 19-20"
    r"stop(?<!\wstop)'s\b",                               # "this stop's runs"
    after('this, that, last, previous, earlier, next', 'stop'),
    after('stop, stops, session, sessions', 'ago'),         # "two stops ago"
    after('this, that, earlier, later, last, previous, past, next, work', 'session'),
    after('this, that, earlier, later, last, previous, past, next, work', 'sessions'),
    r"helper(?<!\whelper)s?(?:'s?)?\s+(?:measured|ran|reran|found|reported|timed|tried|saw|wrote|said|checked"
    r'|confirmed|repeated|sessions?|agents?)\b',             # a helper as a person
    r'agent(?<!\wagent)(?<!user\sagent)s?\b',
    after('this', 'vm'),
    r'development(?<!\wdevelopment)\s+(?:vm|machine)\b',
    after('a later, an earlier, a second, a third, a fourth, a fifth, a sixth', 'run'),  # "a later run repeated"
    r'run(?<!\wrun)s?\s+\d+\s*(?:/|;|,|and|-|–)\s*\d',    # "runs 1 / 2 / 3", "runs 4 and 5"
    after('in, of, from', 'run') + r'\s+\d',               # "0.50-0.88x in run 1"
    r'task(?<!\wtask)\s+brief\b',
    after('slow, slower, busy, quiet, quieter, noisy, noisier', 'hour'),
)]
FIRST_PERSON = re.compile(r'I(?<!\wI)\s+(?:did|could|have|tried|measured|ran|found|timed|saw)\b')  # lab notes

MARKDOWN_LINK = re.compile(r'!?\[[^\]]*\]\(([^)\s]+)(?:\s+"[^"]*")?\)')
RESULTS_COMMENT = re.compile(r'<!--\s*results:\s*(\S+\.json)\s*-->')
FENCED_BLOCK = re.compile(r'^```.*?^```', re.S | re.M)
HEADING = re.compile(r'^#{1,6}\s+(.+?)\s*#*\s*$', re.M)


def source_files() -> list[Path]:
    """The Python files whose text is checked: the project's own, this file excepted (it spells the patterns out)."""
    files = [ROOT / 'hubconf.py'] + [path for folder in SOURCE_DIRS for path in sorted((ROOT / folder).rglob('*.py'))]
    return [path for path in files if path.resolve() != THIS_FILE and TIMM_SUITE not in path.parents]


def diary_hits(text: str) -> Iterator[tuple[int, str]]:
    """(line number, matched words) of every diary phrase in `text`."""
    text = '\n' + text  # a character before the first word, for the patterns' look-behinds; lines count from 1
    lower = text.lower()
    found = [(pattern, lower) for pattern in DIARY_PATTERNS] + [(FIRST_PERSON, text)]
    for pattern, searched in found:
        for match in pattern.finditer(searched):
            yield searched.count('\n', 0, match.start()), match.group(0)


def without_code_blocks(markdown: str) -> str:
    """Markdown with fenced code blocks blanked (their lines kept), so '# comments' are no headings."""
    return FENCED_BLOCK.sub(lambda block: '\n' * block.group(0).count('\n'), markdown)


def heading_anchors(markdown: str) -> set[str]:
    """The anchors GitHub gives the headings: lower case, punctuation dropped, spaces as '-', repeats numbered."""
    seen: dict[str, int] = {}
    anchors = set()
    for title in HEADING.findall(without_code_blocks(markdown)):
        slug = re.sub(r'[^\w\- ]', '', title.strip().lower()).replace(' ', '-')
        anchors.add(slug if slug not in seen else f'{slug}-{seen[slug]}')
        seen[slug] = seen.get(slug, 0) + 1
    return anchors


def relative_links(document: Path) -> Iterator[tuple[str, Path, str]]:
    """(link as written, file it names, anchor) for each link of `document` that stays in the repository."""
    for target in MARKDOWN_LINK.findall(without_code_blocks(document.read_text())):
        if re.match(r'^[a-z][a-z0-9+.-]*:', target):  # https:, mailto:, ...
            continue
        path, _, anchor = target.partition('#')
        yield target, (document.parent / path).resolve() if path else document, anchor


def test_readme_is_short():
    lines = (ROOT / 'README.md').read_text().count('\n')
    assert lines <= README_MAX_LINES, f'README.md has {lines} lines: keep {README_MAX_LINES} at most, the rest in docs/'


def test_no_account_of_the_work():
    hits = [f'{path.relative_to(ROOT)}:{line}: {words!r}'
            for path in DOCUMENTS + source_files() for line, words in diary_hits(path.read_text())]
    assert not hits, 'history belongs in git, not in the repository\'s text:\n' + '\n'.join(hits)


@pytest.mark.parametrize('text', [
    'measured in stop 19', "this stop's runs", 'a later session repeated one run', 'in this session',
    'a helper measured it', 'on this VM', 'the 2-core development machine', 'a later run repeated',
    'img/s, runs 1 / 2 / 3', 'runs 4 and 5', '0.50-0.88x in run 1', 'the first export (task brief)',
    'on a slow hour', 'which I did not measure', 'the other agents',
])
def test_diary_patterns_catch(text):
    assert list(diary_hits(text)), text


@pytest.mark.parametrize('text', [
    'ort.InferenceSession(path, opts)', 'session options', 'give the session one intra-op thread',
    '`pretrained=True` stops with a message', 'from onnx import helper', 'the staging helper itself',
    'argument helpers, number validators', 'It runs 10 epochs at 32 px', 'a user agent string',
    'I/O', 'the run stops at the first error',
])
def test_diary_patterns_spare(text):
    assert not list(diary_hits(text)), text


def test_relative_links_lead_to_files_and_headings():
    broken = []
    for document in LINKED_DOCUMENTS:
        for target, path, anchor in relative_links(document):
            if not path.exists():
                broken.append(f'{document.relative_to(ROOT)}: {target} (no such file)')
            elif anchor and path.suffix == '.md' and anchor not in heading_anchors(path.read_text()):
                broken.append(f'{document.relative_to(ROOT)}: {target} (no such heading)')
    assert not broken, 'broken links:\n' + '\n'.join(broken)


def test_results_comments_cite_kept_files():
    missing = [f'{document.relative_to(ROOT)}: {name}'
               for document in LINKED_DOCUMENTS for name in RESULTS_COMMENT.findall(document.read_text())
               if not (ROOT / name).is_file()]
    assert not missing, 'results files cited but not in the repository:\n' + '\n'.join(missing)
