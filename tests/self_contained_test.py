"""The codebase stands on its own: citations resolve, no machine paths."""
import pathlib
import re

from absl.testing import absltest

ROOT = pathlib.Path(__file__).resolve().parents[1]
CODE_DIRS = ('tinytrain_jax', 'experiments', 'tests', 'benchmarks', 'scripts')
CITE = re.compile(r'docs/reference/([a-z_]+\.md)(?: §(\d+(?:\.\d+)?))?')
# Absolute paths of a build machine, and the third-party notes folder.
_ROOTS = ('work', 'root', 'home', 'Users')  # a build machine's absolute roots
FORBIDDEN = re.compile('|'.join([f'/{r}/\\w' for r in _ROOTS] +
                                ['shared' + '/reference']))


def _code_files():
  for d in CODE_DIRS:
    yield from sorted((ROOT / d).rglob('*.py'))


class SelfContainedTest(absltest.TestCase):

  def test_every_reference_citation_resolves(self):
    cited = 0
    for f in _code_files():
      for name, section in CITE.findall(f.read_text()):
        doc = ROOT / 'docs' / 'reference' / name
        self.assertTrue(doc.exists(), f'{f}: cites missing {doc}')
        if section:
          heads = re.findall(r'^#+ (?:§)?(\d+(?:\.\d+)?)[. ]', doc.read_text(),
                             re.M)
          self.assertIn(section, heads, f'{f}: {name} has no §{section}')
        cited += 1
    self.assertGreater(cited, 10)

  def test_no_machine_paths_or_third_party_notes(self):
    me = pathlib.Path(__file__).resolve()
    for f in _code_files():
      if f.resolve() == me:
        continue
      for i, line in enumerate(f.read_text().splitlines(), 1):
        self.assertIsNone(FORBIDDEN.search(line), f'{f}:{i}: {line.strip()}')


if __name__ == '__main__':
  absltest.main()
