'use strict';
/*
 * A controller as echonetlite2mqtt and Node-RED's ECHONET Lite nodes are one:
 * npm's echonet-lite, finding nodes by its own multicast search and reading
 * a low-voltage smart meter (0x028801) with one-property Gets.
 *
 *   NODE_PATH=.../node_modules node echonet_lite_client.js --local ADDRESS \
 *       [--node ADDRESS] [--timeout S]
 *
 * EL.initialize() with this side's address (echonet-lite takes 127.0.0.1 for
 * itself and ignores it), then EL.search() (a Get of D6, 83, 9D, 9E, 9F to
 * 224.0.23.0) each second until a node answers (the one given by --node, if
 * given), then EL.sendOPC1() Gets of E7, E8, E0, E3, D3, E1, D7 to that
 * node's 0x028801, each sent again after a second without an answer.
 *
 * Prints one JSON object: the nodes that answered the search (with what they
 * said), the node read, each EPC's EDT (hex; null after a Get_SNA), what the
 * library's own facility list holds, and the frames received.  A deadline
 * bounds it all; on failure one line on stderr and exit status 1.
 */

const EL = require('echonet-lite');

const CONTROLLER = '05ff01';
const METER = '028801';
const EPCS = ['e7', 'e8', 'e0', 'e3', 'd3', 'e1', 'd7'];
const FRAMES_KEPT = 80;

function options(argv) {
  const found = {timeout: 30, node: null, local: null};
  for (let i = 0; i < argv.length; i += 2) {
    const name = argv[i].replace(/^--/, '');
    if (!(name in found) || argv[i + 1] === undefined) {
      throw new Error(`usage: echonet_lite_client.js --local ADDRESS [--node ADDRESS] [--timeout S]`);
    }
    found[name] = name === 'timeout' ? Number(argv[i + 1]) : argv[i + 1];
  }
  if (!found.local) {
    throw new Error('--local ADDRESS is required');
  }
  return found;
}

const state = {
  step: 'start',
  responders: {},   // address -> the DETAILs of its answer to the search
  answers: {},      // TID (hex) -> {esv, details}
  frames: [],
  errors: [],
};

function received(rinfo, els, error) {
  if (error) {
    state.errors.push(String(error));
    return;
  }
  if (!els || els.EHD !== '1081') {
    return;
  }
  if (state.frames.length < FRAMES_KEPT) {
    state.frames.push({from: rinfo.address, port: rinfo.port, tid: els.TID, seoj: els.SEOJ,
                       deoj: els.DEOJ, esv: els.ESV, details: els.DETAILs});
  }
  const answer = els.ESV === EL.GET_RES || els.ESV === EL.GET_SNA;
  if (answer && els.SEOJ.startsWith('0ef0') && 'd6' in els.DETAILs) {
    state.responders[rinfo.address] = els.DETAILs;
  }
  if (answer) {
    state.answers[els.TID] = {from: rinfo.address, seoj: els.SEOJ, esv: els.ESV,
                              details: els.DETAILs};
  }
}

function tick(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

async function findNode(wanted) {
  state.step = 'a node answering the multicast search';
  for (;;) {
    EL.search();
    for (let n = 0; n < 20; n++) {
      await tick(50);
      const nodes = Object.keys(state.responders);
      if (wanted ? nodes.includes(wanted) : nodes.length) {
        return wanted || nodes[0];
      }
    }
  }
}

async function get(address, epc) {
  state.step = `the Get of ${epc.toUpperCase()} from ${address}`;
  for (;;) {
    const tid = EL.sendOPC1(address, CONTROLLER, METER, EL.GET, epc, '');
    const key = tid.map((b) => b.toString(16).padStart(2, '0')).join('');
    for (let n = 0; n < 20; n++) {
      await tick(50);
      const answer = state.answers[key];
      if (answer && answer.seoj === METER && epc in answer.details) {
        const edt = answer.details[epc];
        return {edt: edt === '' ? null : edt, esv: answer.esv};
      }
    }
  }
}

async function session(opts) {
  await EL.initialize([CONTROLLER], received, 4, {v4: opts.local});
  const node = await findNode(opts.node);
  const edt = {};
  const esv = {};
  for (const epc of EPCS) {
    const answer = await get(node, epc);
    edt[epc.toUpperCase()] = answer.edt;
    esv[epc.toUpperCase()] = answer.esv;
  }
  return {node: node, responders: state.responders, edt: edt, esv: esv,
          facilities: EL.facilities, errors: state.errors, frames: state.frames};
}

function fail(reason) {
  process.stderr.write(`echonet_lite_client: ${reason}\n`);
  process.exit(1);
}

let opts;
try {
  opts = options(process.argv.slice(2));
} catch (e) {
  fail(e.message);
}
const deadline = setTimeout(() => {
  fail(`no result within ${opts.timeout} s (waiting for ${state.step}; ` +
       `${state.frames.length} frames received: ${JSON.stringify(state.frames.slice(-5))})`);
}, opts.timeout * 1000);
session(opts).then((report) => {
  clearTimeout(deadline);
  process.stdout.write(JSON.stringify(report) + '\n', () => process.exit(0));
}, (error) => fail(`${error && error.stack ? error.stack.split('\n')[0] : error}`));
