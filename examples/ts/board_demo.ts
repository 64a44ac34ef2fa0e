// board_demo.ts: the demo board's actions from Node, through the client bastion generates
// for it (bastion client --ts). examples/board/tests/test_ts_client.py runs it against the
// board under uvicorn:
//
//   bastion client --ts out board.app:bastion      # from examples/, with the board's key
//   tsc --strict --lib es2022,dom --module commonjs --outDir out/js out/*.ts board_demo.ts
//   node out/js/board_demo.js http://127.0.0.1:8000 author@board.example PASSWORD "Title"
//
// A browser keeps the cookie and the page holds the token; in Node the script does both:
// a cookie jar of one site, and the token read from a page it fetched, as a browser
// would render it. It prints one JSON line of what it saw.
import { createClient, type Fetch } from "./bastion-client.js";

declare const process: {
  argv: string[];
  exitCode?: number;
  stdout: { write(text: string): void };
  stderr: { write(text: string): void };
};

const [base, email, password, title] = process.argv.slice(2);

// The session cookie (and any other the board sets): name to value.
const jar = new Map<string, string>();

function keep(response: Response): void {
  for (const line of response.headers.getSetCookie()) {
    const [pair] = line.split(";");
    const at = pair.indexOf("=");
    const name = pair.slice(0, at).trim();
    const value = pair.slice(at + 1).trim();
    if (value === "" || /;\s*max-age=0/i.test(line)) jar.delete(name);
    else jar.set(name, value);
  }
}

function cookies(): Record<string, string> {
  const header = [...jar].map(([name, value]) => `${name}=${value}`).join("; ");
  return header ? { Cookie: header } : {};
}

// Every call of the client goes through the jar.
const withCookies: Fetch = async (url, init) => {
  const response = await fetch(url, { ...init, headers: { ...init.headers, ...cookies() } });
  keep(response);
  return response;
};

// A page's token, as bastion.js finds it: <meta name="csrf-token">, else a form's _csrf.
async function pageToken(path: string): Promise<string> {
  const response = await fetch(base + path, { headers: { Accept: "text/html", ...cookies() } });
  keep(response);
  const page = await response.text();
  const found =
    /<meta name="csrf-token" content="([^"]+)"/.exec(page) ??
    /name="_csrf" value="([^"]+)"/.exec(page);
  if (found === null) throw new Error(`no CSRF token on ${path} (${response.status})`);
  return found[1];
}

async function main(): Promise<void> {
  let token = await pageToken("/login");
  const board = createClient({ baseUrl: base, fetch: withCookies, csrfToken: () => token });

  const wrong = await board.login({ email, password: password + "?" });
  const refused = wrong.ok ? null : wrong.error.code;

  const signedIn = await board.login({ email, password });
  if (!signedIn.ok) throw new Error(`login refused: ${signedIn.error.code}`);
  if ("next" in signedIn.data) throw new Error("this account asks for a code");

  // Signing in rotated the session, and the token with it: the old one is refused.
  const stale = await board.createPost({ title, body: "With the old token." });
  token = await pageToken("/");

  const key = crypto.randomUUID();
  const draft = { title, body: "Posted from Node through the generated client." };
  const made = await board.createPost(draft, { idempotencyKey: key });
  if (!made.ok) throw new Error(`create_post refused: ${made.error.code}`);
  // The same key again: the first reply, and nothing written twice.
  const again = await board.createPost(draft, { idempotencyKey: key });

  const summary = {
    wrong_password: refused,
    signed_in: signedIn.data.name,
    old_token: stale.ok ? "accepted" : stale.error.code,
    post: made.data,
    repeat_same_id: again.ok && again.data.id === made.data.id,
  };
  process.stdout.write(JSON.stringify(summary) + "\n");
}

main().catch((error: unknown) => {
  process.stderr.write(`${error instanceof Error ? error.message : String(error)}\n`);
  process.exitCode = 1;
});
