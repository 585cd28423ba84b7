// Upload one file from disk to a tus / IETF resumable-upload endpoint with tus-js-client.
//
// Usage: node tus_upload.mjs ENDPOINT FILE [OPTIONS_JSON]
//
// OPTIONS_JSON is merged into tus-js-client's options (for example
// {"parallelUploads": 4} or {"protocol": "ietf-draft-05", "chunkSize": 8388608}).
// The file is read with fs.createReadStream, which tus-js-client slices by byte range,
// so no part of the file is held in memory as a whole. The harness's own option
// {"source": "stream"} hides that it is a file: tus-js-client then reads it as a plain
// stream of unknown size, buffering one chunkSize at a time (needed with
// uploadLengthDeferred, whose end tus-js-client detects only on plain streams).
//
// On success one JSON line is printed on stdout: {"url": ..., "size": ..., "requests": N}.
// Every request and its response status is traced on stderr, so a failing test can show
// the exchange. On failure the error is printed on stderr and the exit code is 1.

import { createReadStream, statSync } from 'node:fs'
import { basename } from 'node:path'
import process from 'node:process'
import { PassThrough } from 'node:stream'

import { Upload } from 'tus-js-client'

const TRACED_HEADERS = [
  'location',
  'upload-offset',
  'upload-length',
  'upload-complete',
  'upload-concat',
  'upload-draft-interop-version',
  'tus-resumable',
  'repr-digest',
]

function usage(message) {
  process.stderr.write(`${message}\nusage: node tus_upload.mjs ENDPOINT FILE [OPTIONS_JSON]\n`)
  process.exit(2)
}

function describeResponse(res) {
  const parts = [`${res.getStatus()}`]
  for (const name of TRACED_HEADERS) {
    const value = res.getHeader(name)
    if (value !== undefined) parts.push(`${name}=${value}`)
  }
  const body = res.getBody()
  if (body) parts.push(`body=${JSON.stringify(body.slice(0, 300))}`)
  return parts.join(' ')
}

function describeRequest(req) {
  const headers = Object.entries(req._headers ?? {})
    .map(([name, value]) => `${name}=${value}`)
    .join(' ')
  return `${req.getMethod()} ${req.getURL()} ${headers}`
}

async function main() {
  const [endpoint, filePath, optionsJson = '{}'] = process.argv.slice(2)
  if (!endpoint || !filePath) usage('missing arguments')

  let extra
  try {
    extra = JSON.parse(optionsJson)
  } catch (err) {
    usage(`OPTIONS_JSON is not JSON: ${err.message}`)
  }

  const { source = 'file', ...options } = extra
  if (!['file', 'stream'].includes(source)) usage(`unknown source ${source}`)
  const size = statSync(filePath).size
  const input =
    source === 'file' ? createReadStream(filePath) : createReadStream(filePath).pipe(new PassThrough())
  let requests = 0

  const result = await new Promise((resolve, reject) => {
    const upload = new Upload(input, {
      endpoint,
      // Fail fast: a retry would hide the server's first answer.
      retryDelays: null,
      metadata: { filename: basename(filePath), filetype: 'application/octet-stream' },
      ...options,
      onBeforeRequest(req) {
        requests += 1
        process.stderr.write(`> ${describeRequest(req)}\n`)
      },
      onAfterResponse(req, res) {
        process.stderr.write(`< ${req.getMethod()} ${req.getURL()} -> ${describeResponse(res)}\n`)
      },
      onError: reject,
      onSuccess() {
        resolve({ url: upload.url, size, requests })
      },
    })
    upload.start()
  })

  process.stdout.write(`${JSON.stringify(result)}\n`)
}

main().catch((err) => {
  process.stderr.write(`upload failed: ${err?.stack ?? err}\n`)
  process.exit(1)
})
