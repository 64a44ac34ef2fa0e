// caller.ts: a page's script against the client generated for the board (bastion client
// --ts), type-checked by tests/test_tsclient.py under `tsc --strict`. Each reply is a
// union on `ok`: `data` is there only once `ok` is checked, `error` only when it is false.
import { createClient, type LoginOutput } from "./bastion-client.js";

// On a page of the app: its own origin, the token from its <meta name="csrf-token">.
const client = createClient();

export async function publish(title: string, body: string, key: string): Promise<string> {
  const reply = await client.createPost({ title, body }, { idempotencyKey: key });
  if (reply.ok) return `Published #${reply.data.id}: ${reply.data.title}`;
  if (reply.error.code === "invalid") {
    // 422: why each field was refused, by its name.
    return Object.entries(reply.error.fields ?? {})
      .map(([field, message]) => `${field}: ${message}`)
      .join("\n");
  }
  return reply.error.message;
}

export async function signIn(email: string, password: string): Promise<string> {
  const reply = await client.login({ email, password });
  if (!reply.ok) {
    // A handler's own code (login_failed) is not in the document's list, and still fits.
    return reply.error.code === "login_failed" ? "Wrong email or password." : reply.error.message;
  }
  return greeting(reply.data);
}

// login answers SignedIn or, with codes on, SecondStep (where the code is typed next).
function greeting(data: LoginOutput): string {
  return "next" in data ? `Type your code on ${data.next}` : `Hello, ${data.name}`;
}
