// The records console in headless Chromium, as a records technician and a coder work it with
// the keyboard alone. Run by tests/tests/console.rs, which starts the server, checks what it
// stored afterwards, and reads the last line printed here:
//   node technician.mjs <console-url> <idle-console-url> <discharged-console-url> <release-console-url>
// Environment: CHROMIUM (the browser's path, default `chromium`), SCREENSHOTS (a directory for
// the main screens, default none), PASSWORD (the staff password).
// Prints: one line `RESULT <json>` with every screen's axe-core findings; exits non-zero at the
// first step that does not go as a person would expect, saying which.
import { readFileSync, mkdirSync, mkdtempSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { createRequire } from "node:module"
import { chromium } from "playwright-core"

const require = createRequire(import.meta.url)
const axeSource = readFileSync(require.resolve("axe-core/axe.min.js"), "utf8")
const [base, idleBase, dischargedBase, releaseBase] = process.argv.slice(2)
const password = process.env.PASSWORD
const screenshots = process.env.SCREENSHOTS || ""
if (screenshots) mkdirSync(screenshots, { recursive: true })

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "chromium",
  headless: true,
  // Root in a container has no user namespaces for Chromium's sandbox.
  args: ["--no-sandbox", "--disable-dev-shm-usage"],
})
const screens = {}
const cspViolations = []

function fail(step, detail) {
  console.error(`FAILED at: ${step}${detail ? `: ${detail}` : ""}`)
  process.exitCode = 1
  throw new Error(step)
}

function expect(ok, step, detail) {
  if (!ok) fail(step, detail)
}

async function newPage() {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } })
  const page = await context.newPage()
  page.on("console", (m) => {
    if (/Content Security Policy/i.test(m.text())) cspViolations.push(m.text())
  })
  page.on("pageerror", (e) => fail("a script error on the page", e.message))
  return page
}

// axe-core on the screen as it stands, WCAG 2.1 A and AA. CDP's evaluation is not subject to
// the page's CSP, which stays in force for everything the page itself loads.
async function audit(page, name, shot) {
  await page.evaluate(axeSource)
  const result = await page.evaluate(() =>
    window.axe.run(document, { runOnly: { type: "tag", values: ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "best-practice"] } }),
  )
  screens[name] = {
    passes: result.passes.length,
    violations: result.violations.map((v) => ({ id: v.id, impact: v.impact, nodes: v.nodes.length })),
  }
  if (shot && screenshots) await page.screenshot({ path: `${screenshots}/${shot}.png`, fullPage: true })
}

// Tabs forward until focus is on `selector`: the action is reachable by keyboard.
async function tabTo(page, selector, step) {
  for (let i = 0; i < 200; i++) {
    await page.keyboard.press("Tab")
    if (await page.evaluate((s) => document.activeElement?.matches(s) ?? false, selector)) return
  }
  fail(step, `${selector} is not reachable with Tab`)
}

async function signIn(page, url, user) {
  await page.goto(`${url}/console`)
  expect(page.url().endsWith("/console/sign-in"), "the console sends a stranger to sign in", page.url())
  await tabTo(page, "#user", "sign-in: the user name")
  await page.keyboard.type(user)
  await tabTo(page, "#password", "sign-in: the password")
  await page.keyboard.type(password)
  await Promise.all([page.waitForNavigation(), page.keyboard.press("Enter")])
}

const text = (page, selector) => page.locator(selector).innerText()

try {
  // Sign in with the keyboard.
  const page = await newPage()
  await page.goto(`${base}/console/sign-in`)
  await audit(page, "sign-in", "sign-in")
  await signIn(page, base, "him.jones")
  expect(page.url().endsWith("/console/worklist"), "signed in, the worklist opens", `${page.url()}: ${await text(page, "main")}`)
  await audit(page, "worklist", "worklist")
  const rows = await page.locator("table.worklist tbody tr").count()
  expect(rows === 4, "the ward's four deficiencies are listed", `${rows} rows`)

  // Filter: overdue only, with the checkbox and the Show button.
  await tabTo(page, "#overdue", "the overdue filter")
  await page.keyboard.press("Space")
  await tabTo(page, ".filters button[type=submit]", "the Show button")
  await Promise.all([page.waitForNavigation(), page.keyboard.press("Enter")])
  expect(page.url().includes("overdue=true"), "the filter is in the URL", page.url())
  expect(!/MRN-/.test(new URL(page.url()).search), "no patient data in the URL", page.url())
  const overdue = await page.locator("table.worklist tbody tr").count()
  expect(overdue === 4, "all four are overdue", `${overdue} rows`)

  // Assign the two oldest missing H&Ps to a physician: check them, choose, submit.
  for (const mrn of ["MRN-0002", "MRN-0003"]) {
    const id = await page.locator(`tr:has(td > a:text-is("${mrn}")) input[name=d]`).getAttribute("id")
    await tabTo(page, `#${id}`, `the checkbox of ${mrn}`)
    await page.keyboard.press("Space")
  }
  await tabTo(page, "#assignee", "the assign-to list")
  // A closed <select> takes typed letters and arrow keys as a person uses them.
  await page.keyboard.type("dr.adeyemi")
  const chosen = await page.locator("#assignee").inputValue()
  expect(chosen === "dr.adeyemi", "the physician is chosen by typing", chosen)
  await tabTo(page, ".bulk button[type=submit]", "the Assign button")
  await Promise.all([page.waitForNavigation(), page.keyboard.press("Enter")])
  const said = await text(page, "p.notice")
  expect(said.includes("2 deficiencies assigned to dr.adeyemi"), "the assignment is confirmed", said)
  expect(page.url().includes("overdue=true"), "back on the same filtered worklist", page.url())
  for (const mrn of ["MRN-0002", "MRN-0003"]) {
    const cell = await text(page, `tr:has(td > a:text-is("${mrn}")) td:nth-child(9)`)
    expect(cell.startsWith("dr.adeyemi"), `${mrn} shows its assignee`, cell)
  }

  // Acknowledge the late H&P: its link, the reason, the button.
  await tabTo(page, "a[href^='/console/worklist/acknowledge']", "the acknowledge link")
  await Promise.all([page.waitForNavigation(), page.keyboard.press("Enter")])
  await audit(page, "acknowledge", "acknowledge")
  await tabTo(page, "#reason", "the reason")
  await page.keyboard.type("Admitted at 02:00; the H&P followed the morning round.")
  await tabTo(page, "main form button[type=submit]", "the Acknowledge button")
  await Promise.all([page.waitForNavigation(), page.keyboard.press("Enter")])
  const acknowledged = await text(page, "p.notice")
  expect(acknowledged.includes("acknowledged"), "the acknowledgement is confirmed", acknowledged)
  const late = await page.locator(`tr:has(td > a:text-is("MRN-0004"))`).count()
  expect(late === 0, "an acknowledged H&P leaves the overdue list")

  // One chart's completion, from its MRN on the worklist: a deficiency the rules cannot see,
  // added by hand for the physician.
  await page.goto(`${base}/console/worklist`)
  const completion = await page.locator(`td > a:text-is("MRN-0002")`).getAttribute("href")
  await tabTo(page, `a[href='${completion}']`, "MRN-0002's completion")
  await Promise.all([page.waitForNavigation(), page.keyboard.press("Enter")])
  expect((await text(page, "h1")).includes("MRN-0002"), "the chart's completion opens", await text(page, "h1"))
  await tabTo(page, "#what", "what is missing")
  await page.keyboard.type("The transfusion consent on paper is unsigned")
  await tabTo(page, "#to", "the physician")
  await page.keyboard.type("dr.adeyemi")
  await tabTo(page, "#about", "the entry it is about")
  await tabTo(page, "form[action='/console/completion/add'] button[type=submit]", "the Add deficiency button")
  await Promise.all([page.waitForNavigation(), page.keyboard.press("Enter")])
  expect((await text(page, "#flash")).includes("Deficiency added"), "the deficiency is added")
  expect((await text(page, "ul.by-hand")).includes("for dr.adeyemi"), "it is listed for the physician")
  await audit(page, "chart completion", "completion")

  // The physicians' incomplete records, and the notice to dr.adeyemi, who now has three.
  await tabTo(page, "nav a[href='/console/physicians']", "the Physicians link")
  await Promise.all([page.waitForNavigation(), page.keyboard.press("Enter")])
  const open = await text(page, "tr[data-physician='dr.adeyemi'] td:nth-child(2)")
  expect(open === "3", "dr.adeyemi's two assigned H&Ps and the deficiency added by hand", open)
  await audit(page, "physicians", "physicians")
  await tabTo(page, "a[href^='/console/physicians/notice?user=dr.adeyemi']", "dr.adeyemi's notice")
  await Promise.all([page.waitForNavigation(), page.keyboard.press("Enter")])
  expect((await text(page, "article.letter")).includes("MRN-0003"), "the notice lists the records")
  await audit(page, "physician notice", "physician-notice")

  // Two admissions imported from a file: the page follows the import until it is done.
  await tabTo(page, "nav a[href='/console/import']", "the Import link")
  await Promise.all([page.waitForNavigation(), page.keyboard.press("Enter")])
  await audit(page, "import", null)
  const admitted = new Date(Date.now() - 3600_000).toISOString().replace(/\.\d+Z$/, "Z")
  // Enough of them that the page meets the import under way and follows it.
  const mrns = Array.from({ length: 3000 }, (_, n) => `MRN-8${String(n).padStart(4, "0")}`)
  const admissions = mrns.map((mrn) => JSON.stringify({
    patient: { mrn, family_name: "Okoye", given_names: "Chidi" },
    encounter: { ward: "4west", class: "inpatient", attending: "dr.adeyemi" },
    admitted_at: admitted,
  })).join("\n")
  const upload = join(mkdtempSync(join(tmpdir(), "chartsync-import-")), "admissions.ndjson")
  writeFileSync(upload, admissions)
  await tabTo(page, "#file", "the file to import")
  // The system's file chooser is not the page's: the file is given to the input directly.
  await page.locator("#file").setInputFiles(upload)
  await tabTo(page, "form[action='/console/import'] button[type=submit]", "the Import button")
  const importStarted = Date.now()
  await Promise.all([page.waitForNavigation(), page.keyboard.press("Enter")])
  const underWay = await page.locator("#job-progress").count()
  await page.waitForFunction(() => document.getElementById("job")?.dataset.finished === "true", null, { timeout: 120_000 })
  const imported = await text(page, "#job-state")
  expect(imported.includes("Imported 3000 charts"), "the import is done", imported)
  console.error(`import of 3000 admissions: ${Date.now() - importStarted} ms, page met it under way: ${underWay === 1}`)
  expect(underWay === 1, "the page met the import under way, and followed it to the end")
  await audit(page, "import done", "import")
  await page.goto(`${base}/console/worklist`)
  await audit(page, "worklist after the work", "worklist-worked")

  // A refusal is a page of its own, readable too: another ward.
  await page.goto(`${base}/console/worklist?ward=icu`)
  await audit(page, "refused", null)

  // Sign out with the keyboard.
  await page.goto(`${base}/console/worklist`)
  await tabTo(page, ".sign-out button", "the Sign out button")
  await Promise.all([page.waitForNavigation(), page.keyboard.press("Enter")])
  expect(page.url().endsWith("/console/sign-in?ended=out"), "signed out", page.url())
  await page.goto(`${base}/console/worklist`)
  expect(page.url().endsWith("/console/sign-in"), "the worklist is closed after signing out", page.url())
  await page.context().close()

  // A nurse is told the console is for records staff, and gets no session.
  const nurse = await newPage()
  await signIn(nurse, base, "rn.park")
  const refused = await text(nurse, "main")
  expect(refused.includes("for records staff"), "a nurse is refused", refused)
  await audit(nurse, "nurse refused", null)
  const cookies = await nurse.context().cookies()
  expect(!cookies.some((c) => c.name === "chartsync_console"), "the nurse holds no session cookie")
  await nurse.context().close()

  // Left alone, the page warns and then signs itself out, clearing the screen.
  const idle = await newPage()
  await signIn(idle, idleBase, "him.jones")
  expect(idle.url().endsWith("/console/worklist"), "signed in on the idle server", idle.url())
  await idle.waitForSelector("#idle-warning:not([hidden])", { timeout: 10_000 })
  await idle.waitForURL("**/console/sign-in?ended=idle", { timeout: 15_000 })
  const gone = await text(idle, "main")
  expect(!gone.includes("MRN-"), "nothing of the worklist stays on the screen")
  expect(gone.includes("without activity"), "the person is told why", gone)
  await audit(idle, "signed out for idleness", null)
  await idle.context().close()

  // The delinquency dashboard, reached from the navigation with the keyboard.
  const dash = await newPage()
  await signIn(dash, dischargedBase, "him.jones")
  await tabTo(dash, "nav a[href='/console/delinquency']", "the Delinquency link")
  await Promise.all([dash.waitForNavigation(), dash.keyboard.press("Enter")])
  const delinquent = await text(dash, "#delinquent")
  expect(delinquent === "1", "the ward's one delinquent record", delinquent)
  expect((await text(dash, "#verdict")).startsWith("Over the limit"), "the limit's verdict")
  // The trend's table opens from the keyboard too.
  await tabTo(dash, "details summary", "the trend's table")
  await dash.keyboard.press("Enter")
  expect(await dash.locator("table.trend-table").isVisible(), "the trend as a table")
  await audit(dash, "delinquency", "delinquency")
  await dash.context().close()

  // Find a chart by name, with nothing of it in the URL, and read it.
  const finder = await newPage()
  await signIn(finder, dischargedBase, "him.jones")
  await tabTo(finder, "nav a[href='/console/charts']", "the Find a chart link")
  await Promise.all([finder.waitForNavigation(), finder.keyboard.press("Enter")])
  await tabTo(finder, "#name", "the name field")
  await finder.keyboard.type("lindqvist, e")
  await Promise.all([finder.waitForNavigation(), finder.keyboard.press("Enter")])
  expect(!/lindqvist/i.test(finder.url()), "no name in the URL", finder.url())
  const hits = await finder.locator("table.worklist tbody tr").count()
  expect(hits === 2, "the two charts of the ward's patient (not another ward's)", `${hits} rows`)
  await audit(finder, "chart search", "find-chart")
  await tabTo(finder, "a[href^='/console/chart?id=']", "the first chart's link")
  await Promise.all([finder.waitForNavigation(), finder.keyboard.press("Enter")])
  const title = await text(finder, "h1")
  expect(title.startsWith("Lindqvist, Eva"), "the chart opens", title)
  const entries = await finder.locator("article.entry").count()
  expect(entries >= 1, "its entries are shown", `${entries}`)
  await audit(finder, "chart viewer", "chart")
  await tabTo(finder, "nav a[href='/console/patient-index']", "the Patient index link")
  await Promise.all([finder.waitForNavigation(), finder.keyboard.press("Enter")])
  expect((await text(finder, "#warnings-heading")) === "0 warnings", "nothing wrong in this index")
  await audit(finder, "patient index", null)
  await finder.context().close()

  // A coder codes a discharged chart with the keyboard: the queue from the navigation, a code
  // found by words, proposed as the principal diagnosis present on admission, made final.
  const coder = await newPage()
  await signIn(coder, dischargedBase, "cod.kim")
  await tabTo(coder, "nav a[href='/console/coding']", "the Coding queue link")
  await Promise.all([coder.waitForNavigation(), coder.keyboard.press("Enter")])
  const queued = await coder.locator("table.worklist tbody tr").count()
  expect(queued === 2, "the ward's two discharged charts wait for coding", `${queued} rows`)
  await audit(coder, "coding queue", "coding-queue")
  // Earliest discharge first: MRN-0102, discharged 45 days ago.
  await tabTo(coder, "a[href^='/console/coding/chart']", "the first chart's link")
  await Promise.all([coder.waitForNavigation(), coder.keyboard.press("Enter")])
  expect((await text(coder, "h1")).includes("MRN-0102"), "the chart opens", await text(coder, "h1"))
  await tabTo(coder, "#q", "the code search")
  await coder.keyboard.type("pneumonia unspecified organism")
  await Promise.all([coder.waitForNavigation(), coder.keyboard.press("Enter")])
  expect(!/pneumonia/i.test(coder.url()), "the words stay out of the URL", coder.url())
  const picked = await coder.locator("input[name=pick]:checked").getAttribute("value")
  expect(picked === "J18.9", "the most general code is offered first", picked)
  await tabTo(coder, "#found-sequence", "the sequence")
  await coder.keyboard.type("Principal")
  const sequence = await coder.locator("#found-sequence").inputValue()
  expect(sequence === "principal", "principal chosen by typing", sequence)
  await tabTo(coder, "#found-poa", "present on admission")
  await coder.keyboard.type("Y")
  const poa = await coder.locator("#found-poa").inputValue()
  expect(poa === "Y", "POA chosen by typing", poa)
  await audit(coder, "code search", "coding-search")
  await tabTo(coder, "fieldset.bulk button[type=submit]", "the Propose button")
  await Promise.all([coder.waitForNavigation(), coder.keyboard.press("Enter")])
  const proposed = await text(coder, "#flash")
  expect(proposed.includes("J18.9 proposed as the principal diagnosis"), "the proposal is confirmed", proposed)
  await tabTo(coder, "tr[data-code='J18.9'] button[value=final]", "the Make final button")
  await Promise.all([coder.waitForNavigation(), coder.keyboard.press("Enter")])
  const status = await text(coder, "tr[data-code='J18.9'] td:nth-child(6)")
  expect(status === "Final", "the code is final", status)
  await audit(coder, "chart coded", "coding-chart")
  await tabTo(coder, "nav a[href='/console/coding']", "back to the queue")
  await Promise.all([coder.waitForNavigation(), coder.keyboard.press("Enter")])
  const left = await coder.locator("table.worklist tbody tr").count()
  expect(left === 1, "the coded chart leaves the queue", `${left} rows`)
  await coder.context().close()

  // A records supervisor logs a release request for MRN-0101 and works it through to the
  // release, all by keyboard: find the chart, its release page, the request form.
  const sup = await newPage()
  await signIn(sup, releaseBase, "him.sup")
  await tabTo(sup, "nav a[href='/console/charts']", "the Find a chart link")
  await Promise.all([sup.waitForNavigation(), sup.keyboard.press("Enter")])
  await tabTo(sup, "#mrn", "the MRN field")
  await sup.keyboard.type("MRN-0101")
  await Promise.all([sup.waitForNavigation(), sup.keyboard.press("Enter")])
  await tabTo(sup, "a[href^='/console/chart?id=']", "the chart's link")
  await Promise.all([sup.waitForNavigation(), sup.keyboard.press("Enter")])
  await tabTo(sup, "a[href^='/console/roi/chart']", "the chart's release of information")
  await Promise.all([sup.waitForNavigation(), sup.keyboard.press("Enter")])
  for (const [field, value] of [["#requester", "Acme Life"], ["#recipient", "Acme Life"], ["#recipient_address", "PO Box 9"]]) {
    await tabTo(sup, field, `the ${field} field`)
    await sup.keyboard.type(value)
  }
  await tabTo(sup, "#purpose", "the purpose")
  await sup.keyboard.type("Research")
  expect((await sup.locator("#purpose").inputValue()) === "research", "the purpose chosen by typing")
  await tabTo(sup, "#scope", "what is asked for")
  await sup.keyboard.type("discharge summary")
  await Promise.all([sup.waitForNavigation(), sup.keyboard.press("Enter")])
  const logged = await text(sup, "#flash")
  expect(logged.includes("Request logged"), "the request is logged", logged)
  // The records are in storage: the one 30-day extension, and its notice printed.
  await tabTo(sup, "input[name=reason][id^=delay-]", "the reason for the delay")
  await sup.keyboard.type("the records are in off-site storage")
  await Promise.all([sup.waitForNavigation(), sup.keyboard.press("Enter")])
  expect((await text(sup, "#flash")).includes("Extended by 30 days"), "the request is extended")
  await tabTo(sup, "a[href^='/console/roi/notice']", "the notice's link")
  await Promise.all([sup.waitForNavigation(), sup.keyboard.press("Enter")])
  const notice = await text(sup, "article.letter")
  expect(notice.includes("because the records are in off-site storage"), "the notice gives the reason", notice)
  expect(notice.includes("We will act on your request by"), "the notice gives the new date", notice)
  await tabTo(sup, "button[data-print]", "the Print button")
  await audit(sup, "extension notice", "extension-notice")
  await tabTo(sup, "a[href^='/console/roi/chart']", "back to the chart's release")
  await Promise.all([sup.waitForNavigation(), sup.keyboard.press("Enter")])
  await tabTo(sup, "button.verify", "the Verify button")
  await Promise.all([sup.waitForNavigation(), sup.keyboard.press("Enter")])
  expect((await text(sup, "#flash")).includes("verified"), "the authorization is verified")
  // Prepared: sent by mail, nothing sensitive found, the actual cost of copying it.
  // A radio group takes one Tab stop, and the arrow keys move the choice.
  await tabTo(sup, "input[name=basis]:checked", "the fee's basis")
  await sup.keyboard.press("ArrowRight")
  const basis = await sup.locator("input[name=basis]:checked").getAttribute("value")
  expect(basis === "actual_cost", "actual cost chosen with an arrow key", basis)
  for (const [field, value] of [["labor", "15.00"], ["supplies", "1.20"], ["postage", "0.68"]]) {
    await tabTo(sup, `input[name=${field}]`, `the fee's ${field}`)
    await sup.keyboard.type(value)
  }
  await tabTo(sup, "form.prepare button[type=submit]", "the Save the preparation button")
  await Promise.all([sup.waitForNavigation(), sup.keyboard.press("Enter")])
  const prepared = await text(sup, "#flash")
  expect(prepared.includes("$16.88 to pay"), "the fee is the sum of its parts", prepared)
  await tabTo(sup, "input[name=description]", "what was released")
  await sup.keyboard.type("discharge summary, 2 pages")
  await Promise.all([sup.waitForNavigation(), sup.keyboard.press("Enter")])
  expect((await text(sup, "#flash")).includes("Released"), "the release is recorded")
  expect((await text(sup, "main")).includes("discharge summary, 2 pages"), "the disclosure is listed")
  await audit(sup, "release of information", "release")
  // The chart's audit trail, from the chart: the release is in it, as the supervisor's.
  await tabTo(sup, "main a[href^='/console/chart?id=']", "the chart's link")
  await Promise.all([sup.waitForNavigation(), sup.keyboard.press("Enter")])
  await tabTo(sup, "a[href^='/console/chart/audit']", "the chart's audit trail")
  await Promise.all([sup.waitForNavigation(), sup.keyboard.press("Enter")])
  expect((await text(sup, "main")).includes("him.sup (records_supervisor) on console"), "the supervisor's writes are in it")
  await audit(sup, "chart's audit trail", null)
  await tabTo(sup, "nav a[href='/console/roi']", "the release log link")
  await Promise.all([sup.waitForNavigation(), sup.keyboard.press("Enter")])
  expect((await text(sup, "#log-heading")).startsWith("0 open requests"), "nothing left open")
  await audit(sup, "release log", null)

  // The patient asks which disclosures were made: the supervisor logs the request, gives the
  // accounting and prints the letter, by keyboard.
  await tabTo(sup, "nav a[href='/console/accounting']", "the Accountings link")
  await Promise.all([sup.waitForNavigation(), sup.keyboard.press("Enter")])
  await audit(sup, "accountings", "accountings")
  for (const [field, value] of [["#log-mrn", "MRN-0101"], ["#requester", "Eva Lindqvist"], ["#address", "1 Main St"]]) {
    await tabTo(sup, field, `the ${field} field`)
    await sup.keyboard.type(value)
  }
  await Promise.all([sup.waitForNavigation(), sup.keyboard.press("Enter")])
  expect(!/MRN-0101/.test(sup.url()), "no MRN in the URL", sup.url())
  expect((await text(sup, "#flash")).includes("due in 60 days"), "the accounting request is logged")
  await tabTo(sup, "button.provide", "the Give the accounting button")
  await Promise.all([sup.waitForNavigation(), sup.keyboard.press("Enter")])
  expect((await text(sup, "#flash")).includes("kept as it was given"), "the accounting is given")
  await audit(sup, "accounting given", null)
  await tabTo(sup, "a.letter-link", "the letter's link")
  await Promise.all([sup.waitForNavigation(), sup.keyboard.press("Enter")])
  const letter = await text(sup, "article.letter")
  expect(letter.includes("County Health Department"), "the letter lists the public health report", letter)
  expect(!letter.includes("Acme Life"), "not the release the patient authorized", letter)
  await tabTo(sup, "button[data-print]", "the Print button")
  await audit(sup, "accounting letter", "accounting-letter")
  // The review queues, from the navigation: a chart a tablet made for another ward, held
  // whole; the supervisor reads what it would do and accepts it.
  await tabTo(sup, "nav a[href='/console/review']", "the Review link")
  await Promise.all([sup.waitForNavigation(), sup.keyboard.press("Enter")])
  expect((await text(sup, "#holds-heading")).startsWith("1 held change"), "one held change", await text(sup, "#holds-heading"))
  await audit(sup, "review queues", null)
  await tabTo(sup, "a[href^='/console/review/hold']", "the held change")
  await Promise.all([sup.waitForNavigation(), sup.keyboard.press("Enter")])
  expect((await text(sup, "dd.reason")).includes("outside your access"), "why it was held", await text(sup, "dd.reason"))
  await audit(sup, "held changes", "review-hold")
  await tabTo(sup, "button.accept", "the Accept button")
  await Promise.all([sup.waitForNavigation(), sup.keyboard.press("Enter")])
  expect((await text(sup, "#flash")).includes("accepted"), "accepted, and the tablet is told")
  // The supervisor's own trail, by staff id.
  await tabTo(sup, "nav a[href='/console/audit']", "the Audit trails link")
  await Promise.all([sup.waitForNavigation(), sup.keyboard.press("Enter")])
  await tabTo(sup, "#user", "the staff id")
  await sup.keyboard.type("him.sup")
  await Promise.all([sup.waitForNavigation(), sup.keyboard.press("Enter")])
  expect((await text(sup, "main")).includes("What him.sup did"), "the person's trail")
  await audit(sup, "person's audit trail", null)
  await sup.context().close()

  expect(cspViolations.length === 0, "no Content-Security-Policy violations", cspViolations.join("; "))
  console.log(`RESULT ${JSON.stringify(screens)}`)
} catch (e) {
  if (!process.exitCode) {
    console.error(`FAILED: ${e.stack}`)
    process.exitCode = 1
  }
} finally {
  await browser.close()
}
