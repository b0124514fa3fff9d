// An end-to-end run of qrsys from Node.js, with the .proto files of protos/
// loaded at run time: register, batch-create, list every page, render a PNG,
// rotate the refresh token, log out. Prints a JSON summary and exits 0, or
// prints why it failed and exits 1.
//
//   QRSYS_ADDRESS                      host:port of the server (127.0.0.1:50051)
//   QRSYS_REFRESH_REUSE_GRACE_SECONDS  the server's grace window for a replaced
//                                      refresh token (10, the server default);
//                                      the flow waits it out before replaying one

import { randomUUID } from "node:crypto";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { fileURLToPath } from "node:url";

import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const PROTOS = path.resolve(HERE, "..", "..", "protos");
const PROTO_FILES = ["qrsys/v1/auth.proto", "qrsys/v1/qr_code.proto"];

const ADDRESS = process.env.QRSYS_ADDRESS || "127.0.0.1:50051";
const GRACE_SECONDS = Number(process.env.QRSYS_REFRESH_REUSE_GRACE_SECONDS ?? "10");
const CALL_TIMEOUT_MS = 15_000;
const PASSWORD = "node-client-" + randomUUID();
const BATCH_SIZE = 25;
const PAGE_SIZE = 10;
const URL_TEMPLATE = "https://menu.example/r/node?table={n}";
const PNG_SIGNATURE = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);

// camelCase field names (keepCase: false), as in the proto3 JSON mapping.
const packageDefinition = protoLoader.loadSync(PROTO_FILES, {
  keepCase: false,
  longs: String,
  enums: String,
  defaults: true,
  oneofs: true,
  includeDirs: [PROTOS],
});
const { qrsys } = grpc.loadPackageDefinition(packageDefinition);

class FlowError extends Error {}

function check(condition, message) {
  if (!condition) {
    throw new FlowError(message);
  }
}

function statusName(code) {
  return Object.keys(grpc.status).find((name) => grpc.status[name] === code) ?? String(code);
}

function bearer(accessToken) {
  const metadata = new grpc.Metadata();
  metadata.set("authorization", `Bearer ${accessToken}`);
  return metadata;
}

// A unary call as a promise, with a deadline.
function call(client, method, request, metadata = new grpc.Metadata()) {
  return new Promise((resolve, reject) => {
    const deadline = new Date(Date.now() + CALL_TIMEOUT_MS);
    client[method](request, metadata, { deadline }, (error, response) => {
      if (error) {
        error.message = `${method}: ${error.message}`;
        reject(error);
      } else {
        resolve(response);
      }
    });
  });
}

// Expect a call to fail with `code`; returns the error's details.
async function refused(code, client, method, request, metadata) {
  try {
    await call(client, method, request, metadata);
  } catch (error) {
    check(
      error.code === code,
      `${method} failed with ${statusName(error.code)} (${error.details}), ` +
        `expected ${statusName(code)}`,
    );
    return error.details;
  }
  throw new FlowError(`${method} succeeded, expected ${statusName(code)}`);
}

async function listAll(qr, metadata) {
  const seen = new Map();
  let pageToken = "";
  let pages = 0;
  let totalSize = 0;
  do {
    const page = await call(qr, "ListQrCodes", { pageSize: PAGE_SIZE, pageToken }, metadata);
    pages += 1;
    check(pages <= BATCH_SIZE, "ListQrCodes never returned an empty next_page_token");
    check(page.qrCodes.length <= PAGE_SIZE, `a page held ${page.qrCodes.length} codes`);
    for (const code of page.qrCodes) {
      check(!seen.has(code.id), `code ${code.id} (${code.title}) was listed twice`);
      seen.set(code.id, code);
    }
    totalSize = page.totalSize;
    pageToken = page.nextPageToken;
  } while (pageToken);
  return { codes: [...seen.values()], pages, totalSize };
}

async function flow(auth, qr) {
  const email = `node-${randomUUID()}@example.com`;
  const registered = await call(auth, "Register", {
    email,
    password: PASSWORD,
    displayName: "Node client",
  });
  const userId = registered.user.id;
  let tokens = registered.tokens;
  check(userId && tokens.accessToken && tokens.refreshToken, "Register returned no tokens");
  check(tokens.tokenType === "Bearer", `token_type is ${tokens.tokenType}`);

  const batch = await call(
    qr,
    "BatchCreateQrCodes",
    {
      template: { title: "Table {n}", content: { url: URL_TEMPLATE } },
      firstNumber: "1",
      count: BATCH_SIZE,
    },
    bearer(tokens.accessToken),
  );
  check(batch.qrCodes.length === BATCH_SIZE, `created ${batch.qrCodes.length} codes`);
  batch.qrCodes.forEach((code, index) => {
    const n = index + 1;
    check(code.title === `Table ${n}`, `code ${n} is titled ${code.title}`);
    check(code.content.kind === "url", `code ${n} has content ${code.content.kind}`);
    check(
      code.content.url === URL_TEMPLATE.replace("{n}", String(n)),
      `code ${n} has url ${code.content.url}`,
    );
  });

  const listed = await listAll(qr, bearer(tokens.accessToken));
  const created = new Set(batch.qrCodes.map((code) => code.id));
  check(listed.codes.length === BATCH_SIZE, `listed ${listed.codes.length} codes`);
  check(listed.totalSize === BATCH_SIZE, `total_size is ${listed.totalSize}`);
  check(
    listed.codes.every((code) => created.has(code.id)),
    "the list holds a code the batch did not create",
  );
  const titles = new Set(listed.codes.map((code) => code.title));
  check(titles.size === BATCH_SIZE, "the listed titles are not all different");

  const chosen = batch.qrCodes[6];
  const rendered = await call(
    qr,
    "RenderQrCode",
    { id: chosen.id, format: "IMAGE_FORMAT_PNG", scale: 8 },
    bearer(tokens.accessToken),
  );
  check(rendered.contentType === "image/png", `content_type is ${rendered.contentType}`);
  check(
    Buffer.isBuffer(rendered.data) && rendered.data.subarray(0, 8).equals(PNG_SIGNATURE),
    "the render does not start with the PNG signature",
  );
  // IHDR follows the signature: length, type, then width and height.
  check(rendered.data.toString("latin1", 12, 16) === "IHDR", "the PNG has no IHDR chunk");
  const width = rendered.data.readUInt32BE(16);
  const height = rendered.data.readUInt32BE(20);
  check(width === height && width > 0, `the PNG is ${width}x${height}`);

  const oldRefreshToken = tokens.refreshToken;
  const refreshedResponse = await call(auth, "RefreshToken", { refreshToken: oldRefreshToken });
  tokens = refreshedResponse.tokens;
  check(tokens.refreshToken !== oldRefreshToken, "RefreshToken returned the same refresh token");
  const me = await call(auth, "GetCurrentUser", {}, bearer(tokens.accessToken));
  check(me.user.id === userId, `GetCurrentUser answered ${me.user.id}, not ${userId}`);
  check(me.user.email === email, `GetCurrentUser answered ${me.user.email}`);

  // A replaced refresh token is refused once the server's grace window has
  // passed, and its replay ends the session: whoever holds the newer tokens
  // may be someone else.
  if (GRACE_SECONDS > 0) {
    await sleep((GRACE_SECONDS + 1) * 1000);
  }
  await refused(grpc.status.UNAUTHENTICATED, auth, "RefreshToken", {
    refreshToken: oldRefreshToken,
  });
  await refused(
    grpc.status.UNAUTHENTICATED,
    auth,
    "GetCurrentUser",
    {},
    bearer(tokens.accessToken),
  );

  // A new session, ended by Logout.
  const login = await call(auth, "Login", { email, password: PASSWORD });
  const session = login.tokens;
  const again = await call(auth, "GetCurrentUser", {}, bearer(session.accessToken));
  check(again.user.id === userId, "Login signed in someone else");
  await call(auth, "Logout", {}, bearer(session.accessToken));
  await refused(
    grpc.status.UNAUTHENTICATED,
    auth,
    "GetCurrentUser",
    {},
    bearer(session.accessToken),
  );
  await refused(grpc.status.UNAUTHENTICATED, auth, "RefreshToken", {
    refreshToken: session.refreshToken,
  });

  return {
    address: ADDRESS,
    userId,
    created: batch.qrCodes.length,
    listed: listed.codes.length,
    pages: listed.pages,
    totalSize: listed.totalSize,
    png: {
      id: chosen.id,
      bytes: rendered.data.length,
      width,
      contentType: rendered.contentType,
      encodedText: chosen.encodedText,
      data: rendered.data.toString("base64"),
    },
    refresh: { newAccessTokenWorks: true, oldRefreshToken: "UNAUTHENTICATED" },
    logout: { accessToken: "UNAUTHENTICATED" },
  };
}

async function main() {
  const credentials = grpc.credentials.createInsecure();
  const auth = new qrsys.v1.AuthService(ADDRESS, credentials);
  const qr = new qrsys.v1.QrCodeService(ADDRESS, credentials);
  try {
    const summary = await flow(auth, qr);
    console.log(JSON.stringify(summary));
    return 0;
  } catch (error) {
    const status = typeof error.code === "number" ? ` [${statusName(error.code)}]` : "";
    console.error(`qrsys flow failed against ${ADDRESS}${status}: ${error.message}`);
    return 1;
  } finally {
    auth.close();
    qr.close();
  }
}

process.exitCode = await main();
